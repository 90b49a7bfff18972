"""`train.bank_pass_band`: training prompts chosen by the explorer's cached pass rate."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import UserError
from stage2_train.difficulty import in_band, pass_rates


def test_pass_rates_and_band_by_hand():
    pool = {"a": np.array([0, 1, 2, 3]), "b": np.array([4, 5]), "c": np.array([6, 7, 8])}
    correct = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    rates = pass_rates(pool, correct)
    assert rates == {"a": 0.25, "b": 1.0, "c": 0.0}
    ids = ["c", "a", "x", "b"]  # x: not in the bank, so it has no rate
    assert in_band(ids, rates, (0.25, 1.0)) == [1, 3]
    assert in_band(ids, rates, (0.0, 0.0)) == [0]
    assert in_band(ids, rates, (0.25, 0.25)) == [1]  # both ends included
    assert in_band(ids, rates, (0.0, 1.0)) == [0, 1, 3]
    assert in_band(ids, rates, (0.3, 0.9)) == []
    assert in_band(["t"], {"t": 0.1 + 0.2}, (0.0, 0.3)) == [0]  # 0.30000000000000004 is in [0, 0.3]


def test_band_is_validated():
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig

    def load(*sets):
        return load_stage_config(TrainConfig, "train", params_path=None, overrides=list(sets))

    assert load("bank_pass_band=[0.1, 0.5]").bank_pass_band == (0.1, 0.5)
    assert load().bank_pass_band is None
    with pytest.raises(UserError, match=r"bank_pass_band \[0.6, 0.2\]: need \[low, high\]"):
        load("bank_pass_band=[0.6, 0.2]")
    with pytest.raises(UserError, match=r"bank_pass_band \[0.5\]: need \[low, high\]"):
        load("bank_pass_band=[0.5]")
    with pytest.raises(UserError, match="bank_pass_band reads the explorer's pass rates from the bank; set bank"):
        load("bank_pass_band=[0.1, 0.5]", "bank=null")


@pytest.fixture(scope="module")
def graded_world(tmp_path_factory, char_tokenizer):
    """10 prompts; sample s of prompt i is right when s < i % 5, so prompt i's pass rate is (i % 5) / 4."""
    from pipeline.data import Problem, write_problems_jsonl
    from pipeline.testbed import task
    from pipeline.testbed.model import ModelShape, build_model

    from .conftest import write_bank

    root = tmp_path_factory.mktemp("graded_world")
    build_model(ModelShape(layers=1, hidden=64), char_tokenizer, seed=3).save_pretrained(root / "learner")
    char_tokenizer.save_pretrained(root / "learner")
    rng = np.random.default_rng(1)
    rows = task.sample_numbers(rng, 12, task.TaskSpec())
    problems = [Problem(f"p{i:03d}", task.question(tuple(n)), task.answer(tuple(n)), {"flawed": False})
                for i, n in enumerate(rows)]
    write_problems_jsonl(problems[:10], root / "train.jsonl")
    write_problems_jsonl(problems[10:], root / "test.jsonl")
    write_bank(root / "bank", problems[:10], char_tokenizer, right=lambda i, s: s < i % 5)
    return root


def _config(world, out, **changes):
    from .conftest import tiny_config

    return tiny_config(world, out, steps=1, checkpoint_every=1, tensorboard=False, **changes)


def test_setup_keeps_only_the_band(graded_world, tmp_path):
    from stage2_train.setup_run import setup

    run = setup(_config(graded_world, tmp_path / "a", bank_pass_band=(0.25, 0.75)), echo=lambda *_: None)
    ro = run.rollouts
    assert [p.id for p in ro.problems] == ["p001", "p002", "p003", "p006", "p007", "p008"]
    texts = [run.learner.tokenizer.decode(ids, skip_special_tokens=True) for ids in ro.prompt_ids]
    assert texts == [p.question + "=" for p in ro.problems]  # token ids follow their problems
    assert ro.reader is not None and len(ro.pool) == 10  # S2L-PO still draws from the whole index
    ro.reader.close()
    from stage2_train.config import AnnealConfig
    from stage2_train.schedule import Schedule

    grpo_anneal = AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.0)
    grpo = setup(_config(graded_world, tmp_path / "b", bank_pass_band=(1.0, 1.0), anneal=grpo_anneal),
                 echo=lambda *_: None)
    assert [p.id for p in grpo.rollouts.problems] == ["p004", "p009"]
    assert grpo.rollouts.reader is None and grpo.rollouts.pool == {}  # GRPO on the band: the bank is not read again
    with pytest.raises(UserError, match=r"train.bank_pass_band \[0.8, 0.9\]: no training prompt"):
        setup(_config(graded_world, tmp_path / "c", bank_pass_band=(0.8, 0.9)), echo=lambda *_: None)


@pytest.mark.slow
def test_a_banded_run_draws_only_banded_prompts(graded_world, tmp_path):
    from stage2_train.metrics import read_jsonl
    from stage2_train.trainer import run_train

    # only p003 and p008 (3 of 4 right); step 1 has α = 1, so each group is all 4 of its bank rows
    cfg = _config(graded_world, tmp_path / "run", bank_pass_band=(0.75, 0.75))
    run_train(cfg, echo=lambda *_: None, progress=False)
    step1 = read_jsonl(f"{cfg.out_dir}/metrics.jsonl")[1]
    assert step1["g_w"] == 4 and step1["bank/responses"] == 6 * 4
    assert step1["bank/accuracy"] == pytest.approx(0.75)


def test_the_band_arms_of_the_study_presets_are_valid_train_configs():
    from pathlib import Path

    from pipeline.config import load_params, load_stage_config
    from stage2_train.study import StudyConfig, check_arms

    params = Path(__file__).parents[2] / "params.yaml"
    sections = [s for s in load_params(params) if s.startswith("study_")]
    banded = []
    for section in sections:
        cfg = load_stage_config(StudyConfig, section, params_path=params)
        check_arms(cfg, str(params))  # a UserError names the bad arm
        banded += [arm for arm, o in cfg.arms.items() if (o or {}).get("bank_pass_band")]
    assert {"s2lpo-band", "grpo-band", "s2lpo-band-hard"} <= set(banded)
