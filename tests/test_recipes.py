"""Every recipe under recipes/ builds each of its sections' stage configs (nothing is
downloaded: hub ids are only validated as strings), and the Qwen3-8B recipe holds the
paper's settings."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_params, load_stage_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
QWEN3 = ROOT / "recipes" / "qwen3-8b.yaml"


def _config_class(section: str):
    from pipeline.evaluate.config import EvaluateConfig
    from pipeline.testbed.config import PrepareConfig
    from stage1_explore.config import ExploreConfig
    from stage2_train.config import TrainConfig
    from stage2_train.study import StudyConfig

    if section.startswith("study_"):
        return StudyConfig
    return {"prepare": PrepareConfig, "explore": ExploreConfig, "train": TrainConfig,
            "evaluate": EvaluateConfig}[section]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_section_builds_its_config(recipe, monkeypatch):
    from stage2_train.study import check_arms

    monkeypatch.chdir(ROOT)  # recipe paths are relative to the repository root
    sections = load_params(recipe)
    assert sections
    for section in sections:
        cfg = load_stage_config(_config_class(section), section, params_path=recipe)
        if section.startswith("study_"):
            check_arms(cfg, str(recipe))  # every arm's overrides build a train config too


def test_the_qwen3_recipe_is_the_papers_setting(monkeypatch):
    from pipeline.engines.base import EngineKind
    from pipeline.evaluate.config import EvaluateConfig, Preset
    from stage1_explore.config import ExploreConfig
    from stage2_train.config import TrainConfig

    monkeypatch.chdir(ROOT)
    explore = load_stage_config(ExploreConfig, "explore", params_path=QWEN3)
    train = load_stage_config(TrainConfig, "train", params_path=QWEN3)
    evaluate = load_stage_config(EvaluateConfig, "evaluate", params_path=QWEN3)
    assert (explore.explorer, explore.samples_per_prompt, explore.temperature, explore.top_p) == \
        ("Qwen/Qwen3-1.7B-Base", 32, 0.7, 0.95)
    assert (train.learner, train.group_size, train.steps, train.anneal.t_mix, train.prompts_per_step, train.lr,
            train.max_new_tokens) == ("Qwen/Qwen3-8B-Base", 16, 16, 8, 1024, 1e-6, 4096)
    assert explore.prompts == train.prompts == "BytedTsinghua-SIA/DAPO-Math-17k"
    assert (explore.bank, explore.template) == (train.bank, train.template)  # train reads explore's bank
    assert explore.engine is train.engine is evaluate.engine is EngineKind.VLLM
    assert (evaluate.samples, evaluate.preset, set(evaluate.benchmark_files)) == \
        (16, Preset.QWEN3_NOTHINK, {"aime24", "aime25", "math500"})


def test_the_qwen3_recipe_dry_runs_its_evaluation(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["evaluate", "--params", str(QWEN3), "--dry-run"])
    assert result.exit_code == 0, result.output
    for line in ("aime24.jsonl: 30 problems", "aime25.jsonl: 30 problems", "math500.jsonl: 500 problems",
                 "temperature 0.7, top_p 0.8, top_k 20, presence_penalty 1.5, max_new_tokens 4096",
                 "generate   8960 responses"):
        assert line in result.output
