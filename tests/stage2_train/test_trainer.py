"""End-to-end stage 2 on a tiny learner and a hand-written bank (CPU, seconds)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from stage2_train.config import AnnealConfig, LoraSettings, LossConfig
from stage2_train.groups import BankPrompts, BankRows, Mixing
from stage2_train.metrics import read_jsonl
from stage2_train.rl_math import Aggregation, BankCorrection, Baseline
from stage2_train.schedule import Schedule, anneal_rate, bank_count
from stage2_train.step import batch_prompts
from stage2_train.trainer import run_train

pytestmark = pytest.mark.slow


def _run(cfg, **kw):
    return run_train(cfg, echo=lambda *_: None, progress=False, **kw)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_end_to_end_s2lpo(train_config, train_world):
    cfg = train_config(loss=LossConfig(kl_coef=0.001), weight_decay=0.0)
    summary = _run(cfg)
    out = cfg.out_dir
    before, after = _weights(train_world / "learner"), _weights(Path(out) / "model")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []  # every trainable parameter moved (no weight decay to fake it)
    records = read_jsonl(f"{out}/metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    steps = records[1:]
    for r in steps:
        alpha = anneal_rate(r["step"], schedule=Schedule.LINEAR, t_mix=3)
        assert r["alpha"] == pytest.approx(alpha)
        g_w = bank_count(alpha, 4)
        assert r["bank/responses"] == 6 * g_w and r["online/responses"] == 6 * (4 - g_w)
        assert r["g_w"] == g_w and r["g_s"] == 4 - g_w
        assert math.isfinite(r["loss"]) and r["updates"] == 2
        if g_w:
            assert r["bank/accuracy"] == pytest.approx(0.5, abs=0.26)  # the bank is half right
            assert r["tokens/bank"] > 0
    assert steps[0]["tokens/online_generated"] == 0 and steps[-1]["tokens/online_generated"] > 0
    assert summary["online_tokens"] == sum(r["tokens/online_generated"] for r in steps)
    assert "eval/pass@1" in records[0] and "eval/flawed/pass@1" in records[2] and "eval/rest/pass@2" in records[4]
    assert list((Path(out) / "tb").glob("events.out.tfevents.*"))
    assert json.loads((Path(out) / "summary.json").read_text())["steps"] == 4


def _training_keys(records):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "eval/"))} for r in records]


def test_resume_repeats_the_uninterrupted_run(train_config, tmp_path):
    whole = train_config(out_dir=str(tmp_path / "whole"), checkpoint_every=2)
    _run(whole)
    part = dataclasses.replace(whole, out_dir=str(tmp_path / "part"), steps=2)
    _run(part)
    _run(dataclasses.replace(part, steps=4), resume=True)
    a, b = read_jsonl(tmp_path / "whole/metrics.jsonl"), read_jsonl(tmp_path / "part/metrics.jsonl")
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert _training_keys(a) == _training_keys(b)
    wa, wb = _weights(tmp_path / "whole/model"), _weights(tmp_path / "part/model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_needs_resume_and_same_settings(train_config):
    cfg = train_config(steps=1, eval=dataclasses.replace(train_config().eval, every=0, problems=None))
    _run(cfg)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        _run(cfg)
    with pytest.raises(UserError, match=r"different settings \(lr\)"):
        _run(dataclasses.replace(cfg, lr=0.5), resume=True)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(train_config, monkeypatch):
    import stage2_train.ppo as ppo_module

    cfg = train_config(steps=2, checkpoint_every=1)
    _run(cfg)
    real = ppo_module.token_logprobs

    def poisoned(model, batch, **kw):
        logp, ent = real(model, batch, **kw)
        return logp * float("nan"), ent

    monkeypatch.setattr(ppo_module, "token_logprobs", poisoned)
    with pytest.raises(UserError, match=r"step 3: the loss is nan; .*last good checkpoint: .*step-000002"):
        _run(dataclasses.replace(cfg, steps=3), resume=True)
    assert (Path(cfg.out_dir) / "checkpoints/latest").read_text() == "step-000002"


@pytest.mark.parametrize("changes", [
    {"mixing": Mixing.ALTERNATING},
    {"bank_prompts": BankPrompts.RESCUE, "bank_rows": BankRows.REWARDED},
    {"loss": LossConfig(baseline=Baseline.ONLINE, bank_correction=BankCorrection.TRUNCATED_IS, kl_coef=0.0)},
    {"loss": LossConfig(bank_correction=BankCorrection.LUFFY, normalize_std=False, aggregation=Aggregation.CONSTANT)},
    {"loss": LossConfig(aggregation=Aggregation.SEQUENCE_MEAN, clip_high=0.28), "ppo_epochs": 2},
    {"anneal": AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.0), "temperature": 1.2},
], ids=["alternating", "rescue-rewarded", "online-baseline-tis", "luffy-drgrpo", "seqmean-cliphigher", "grpo-noise"])
def test_variants_run_and_train(train_config, changes):
    cfg = train_config(steps=2, eval=dataclasses.replace(train_config().eval, every=0, problems=None), **changes)
    _run(cfg)
    records = read_jsonl(f"{cfg.out_dir}/metrics.jsonl")[1:]
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
    if changes.get("mixing") is Mixing.ALTERNATING:
        assert records[0]["g_w"] == 4 and records[0]["g_s"] == 0  # α = 1: bank phase only
        assert records[1]["g_w"] == 2 and records[1]["g_s"] == 2  # α = 0.5: ⌈2⌉ and ⌈2⌉
    if "anneal" in changes:
        assert all(r["bank/responses"] == 0 for r in records)
    if changes.get("bank_rows") is BankRows.REWARDED:
        assert all(r["bank/accuracy"] in (None, 1.0) for r in records)


def test_lora_trains_only_the_adapter(train_config):
    cfg = train_config(steps=2, lora=LoraSettings(r=4, alpha=8), weight_decay=0.0,
                       eval=dataclasses.replace(train_config().eval, every=0, problems=None))
    _run(cfg)
    from safetensors.torch import load_file

    adapter = load_file(f"{cfg.out_dir}/model/adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero


def test_bank_of_another_tokenizer_is_refused(train_config, train_world, char_tokenizer, tmp_path):
    from pipeline.data import load_problems

    from .conftest import write_bank

    write_bank(tmp_path / "foreign", load_problems(str(train_world / "train.jsonl")), char_tokenizer,
               tokenizer_fp="0123456789abcdef")
    with pytest.raises(UserError, match="tokenizer .* differs from the learner's"):
        _run(train_config(bank=str(tmp_path / "foreign")))


def test_batch_prompts_walks_epoch_permutations():
    first = batch_prompts(10, 4, 1, 0) + batch_prompts(10, 4, 2, 0) + batch_prompts(10, 4, 3, 0)[:2]
    assert sorted(first) == list(range(10))  # one epoch covers every prompt once
    assert batch_prompts(10, 4, 3, 0) == batch_prompts(10, 4, 3, 0)


def test_gradient_checkpointing_gives_the_same_update(train_config, tmp_path):
    from stage2_train.setup_run import setup

    off = train_config(steps=1, out_dir=str(tmp_path / "off"),
                       eval=dataclasses.replace(train_config().eval, every=0, problems=None))
    on = dataclasses.replace(off, out_dir=str(tmp_path / "on"), gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in setup(on, echo=lambda *_: None).learner.model.modules())
    _run(off)
    _run(on)
    a, b = _weights(tmp_path / "off/model"), _weights(tmp_path / "on/model")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_first_update_reuses_its_own_forward_as_old_logprobs(train_config, tmp_path, monkeypatch):
    """The no-grad pass skips the first mini-batch's rows (their old log-probs are the first
    update's own forward, detached: the weights have not moved yet), and the run equals one
    that computes every old log-prob apart."""
    import stage2_train.ppo as ppo_mod
    import stage2_train.step as step_mod

    cfg = train_config(steps=3, out_dir=str(tmp_path / "reuse"), lr=1e-2,
                       eval=dataclasses.replace(train_config().eval, every=0, problems=None))
    skipped, real = [], ppo_mod.batched_logprobs

    def spy(model, batch, micro, *, calls=0, skip=None):
        skipped.append(0 if skip is None else int(skip.sum()))
        return real(model, batch, micro, calls=calls, skip=skip)

    monkeypatch.setattr(ppo_mod, "batched_logprobs", spy)
    _run(cfg)
    assert skipped == [cfg.mini_batch_size] * cfg.steps  # 24 rows per step, mini-batches of 12
    monkeypatch.setattr(step_mod, "_first_update_rows", lambda first, offset, n: torch.zeros(n, dtype=torch.bool))
    _run(dataclasses.replace(cfg, out_dir=str(tmp_path / "apart")))
    a, b = _weights(tmp_path / "reuse/model"), _weights(tmp_path / "apart/model")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    first = [r["loss"] for r in read_jsonl(tmp_path / "reuse/metrics.jsonl") if "loss" in r]
    second = [r["loss"] for r in read_jsonl(tmp_path / "apart/metrics.jsonl") if "loss" in r]
    assert first == pytest.approx(second, abs=1e-6)


def test_checkpoint_every_0_checkpoints_only_at_the_end(train_config):
    cfg = train_config(steps=2, checkpoint_every=0, eval=dataclasses.replace(train_config().eval, every=0, problems=None))
    _run(cfg)
    out = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in out.glob("step-*")) == ["step-000002"]
    assert (out / "latest").read_text() == "step-000002"


def test_a_negative_checkpoint_every_is_refused(train_config):
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_config(checkpoint_every=-1)
