import json

import numpy as np
import pytest

from pipeline.data import load_problems
from pipeline.testbed.build import format_report, make_splits, prepare
from pipeline.testbed.config import MemberRecipe, PrepareConfig


def small_config(out_dir, **kw) -> PrepareConfig:
    base = dict(out_dir=str(out_dir), train_size=300, test_size=24, test_flawed=6,
                explorer=MemberRecipe(layers=1, hidden=64, sft_steps=12, seed=1),
                learner=MemberRecipe(layers=1, hidden=128, sft_steps=12, seed=2),
                eval_samples=4, eval_max_new_tokens=24)
    base.update(kw)
    return PrepareConfig(**base)


def test_splits_are_stratified_disjoint_and_deterministic(tmp_path):
    cfg = small_config(tmp_path, train_size=3000, test_size=100, test_flawed=30)
    train, test = make_splits(cfg)
    assert (train, test) == make_splits(cfg)
    assert sum(p.meta["flawed"] for p in test) == 30
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in train}) == 3000
    rate = np.mean([p.meta["flawed"] for p in train])
    assert abs(rate - 10 / 90) < 0.025  # natural rate in the train split
    for p in test[:5]:
        assert int(p.answer) == sum(map(int, p.question.split("+")))


def test_clean_family_has_no_flawed_problems(tmp_path):
    from pipeline.testbed.task import TaskSpec

    train, test = make_splits(small_config(tmp_path, task=TaskSpec(flaw_offset=0)))
    assert not any(p.meta["flawed"] for p in train + test)


@pytest.mark.slow
def test_prepare_builds_a_loadable_family(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "testbed"
    lines = []
    report = prepare(small_config(out), echo=lines.append)
    assert sorted(p.name for p in out.iterdir()) == [
        "explorer", "learner", "passk.json", "passk.png", "sft_loss.csv", "test.jsonl", "train.jsonl"]
    assert not (tmp_path / "testbed.partial").exists()
    assert json.loads((out / "passk.json").read_text()) == report
    for name, hidden in (("explorer", 64), ("learner", 128)):
        model = AutoModelForCausalLM.from_pretrained(out / name)
        tok = AutoTokenizer.from_pretrained(out / name)
        assert model.config.hidden_size == hidden and tok.eos_token_id == model.config.eos_token_id
        assert (out / name / "model.safetensors").is_file()
        table = report[name]["pass_at_k"]
        assert set(table) == {"all", "flawed", "rest"} and list(table["all"]) == ["1", "2", "4"]
        curve = list(table["all"].values())
        assert all(0.0 <= v <= 1.0 for v in curve) and curve == sorted(curve)
    assert report["flawed_problems"] == 6 and report["test_problems"] == 24
    test = load_problems(str(out / "test.jsonl"))
    assert len(test) == 24 and sum(p.meta["flawed"] for p in test) == 6
    csv = (out / "sft_loss.csv").read_text().splitlines()
    assert csv[0] == "step,explorer,learner" and len(csv) == 13
    assert "crossover k" in lines[-1] and "explorer" in lines[-1]
    assert format_report(report) == lines[-1]


def test_member_recipes_are_checked_when_loaded():
    from pipeline.config import load_stage_config
    from pipeline.errors import UserError

    def load(*sets):
        return load_stage_config(PrepareConfig, "prepare", params_path=None, overrides=list(sets))

    assert load().medium is None  # built only when configured
    medium = load("medium={layers: 2, hidden: 128, sft_steps: 5, seed: 3}").medium
    assert medium == MemberRecipe(layers=2, hidden=128, sft_steps=5, seed=3)
    with pytest.raises(UserError, match=r"prepare.medium: hidden \(96\) must be a positive multiple of 64"):
        load("medium={layers: 2, hidden: 96, sft_steps: 5, seed: 3}")
    with pytest.raises(UserError, match=r"prepare.explorer: layers \(0\) and sft_steps \(1500\) must be ≥ 1"):
        load("explorer.layers=0")


@pytest.mark.slow
def test_prepare_builds_the_optional_medium_member(tmp_path):
    from transformers import AutoModelForCausalLM

    from pipeline.testbed.model import count_parameters

    out = tmp_path / "testbed"
    lines = []
    medium = MemberRecipe(layers=1, hidden=64, sft_steps=6, seed=3)
    cfg = small_config(out, explorer=MemberRecipe(layers=1, hidden=64, sft_steps=4, seed=1),
                       learner=MemberRecipe(layers=2, hidden=64, sft_steps=8, seed=2), medium=medium,
                       test_size=12, test_flawed=3, eval_samples=2, eval_max_new_tokens=16)
    report = prepare(cfg, echo=lines.append)
    assert {"explorer", "medium", "learner"} <= {p.name for p in out.iterdir()}
    models = {m: AutoModelForCausalLM.from_pretrained(out / m) for m in ("explorer", "medium", "learner")}
    assert [models[m].config.num_hidden_layers for m in models] == [1, 1, 2]
    assert report["medium"]["sft_steps"] == 6 and report["medium"]["parameters"] == count_parameters(models["medium"])
    assert list(report["medium"]["pass_at_k"]["all"]) == ["1", "2"]
    assert report["crossover_k_medium"] in (None, 1, 2)
    csv = (out / "sft_loss.csv").read_text().splitlines()
    assert csv[0] == "step,explorer,medium,learner" and len(csv) == 1 + 8
    assert csv[5].split(",")[1] == "" and csv[5].split(",")[2] != ""  # the explorer's 4 steps are done at row 5
    text = format_report(report)
    assert text == lines[-1] and [r.split()[0] for r in text.splitlines()[2:-1]] == \
        ["explorer"] * 3 + ["medium"] * 3 + ["learner"] * 3
    assert "(medium: " in text.splitlines()[-1]


def test_a_member_may_set_its_own_sft_batch_size_and_rate(tmp_path, monkeypatch):
    from pipeline.config import load_stage_config
    from pipeline.errors import UserError
    from pipeline.testbed import build, sft

    cfg = load_stage_config(PrepareConfig, "prepare", params_path=None,
                            overrides=["learner.batch_size=8", "learner.lr=0.01"])
    assert cfg.learner.sft_settings(cfg.sft) == sft.SFTSettings(batch_size=8, lr=0.01)
    assert cfg.explorer.sft_settings(cfg.sft) == cfg.sft  # unset: the shared block's
    with pytest.raises(UserError, match=r"prepare.learner: batch_size \(0\) must be ≥ 1"):
        load_stage_config(PrepareConfig, "prepare", params_path=None, overrides=["learner.batch_size=0"])

    used = {}

    def spy(model, tokenizer, *, settings, **kw):
        used["settings"] = settings
        return [0.0]

    monkeypatch.setattr(sft, "train_sft", spy)  # _member_job imports it when it runs
    recipe = MemberRecipe(layers=1, hidden=64, sft_steps=1, seed=2, batch_size=5, lr=0.02)
    small = small_config(tmp_path, eval_samples=1, eval_max_new_tokens=4)
    _, test = make_splits(small)
    build._member_job(small, "learner", recipe, tmp_path / "learner", test[:2])
    assert (used["settings"].batch_size, used["settings"].lr) == (5, 0.02)
    assert used["settings"].warmup_steps == small.sft.warmup_steps


def test_every_member_trains_on_a_fixed_thread_count(tmp_path, monkeypatch):
    """The learner used to start on fewer threads beside a spawned explorer and widen when the
    explorer was done, at a step that depended on timing: two builds on one machine gave two
    different learners. Now each SFT step's thread count is fixed by the member alone."""
    import os

    import torch

    from pipeline.testbed import sft

    seen = {}
    real = sft.train_sft

    def spy(model, tokenizer, *, steps, progress=None, **kw):
        counts = seen.setdefault(int(model.config.hidden_size), [])

        def record(step, loss):
            counts.append(torch.get_num_threads())
            if progress is not None:
                progress(step, loss)

        return real(model, tokenizer, steps=steps, progress=record, **kw)

    monkeypatch.setattr(sft, "train_sft", spy)
    before = torch.get_num_threads()
    try:
        prepare(small_config(tmp_path / "testbed", explorer=MemberRecipe(layers=1, hidden=64, sft_steps=6, seed=1),
                             learner=MemberRecipe(layers=1, hidden=128, sft_steps=4, seed=2)), echo=lambda _: None)
    finally:
        torch.set_num_threads(before)
    assert seen == {64: [1] * 6, 128: [max(1, os.cpu_count() or 1)] * 4}
