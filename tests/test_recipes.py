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
    assert explore.bank == train.bank and train.template is None  # train reads explore's bank, and its template
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


def _dry_run(monkeypatch, command: str, *extra: str):
    from huggingface_hub import constants

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the shipped configs answer; nothing is fetched
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")
    return CliRunner().invoke(app, [command, "--params", str(QWEN3), "--dry-run", *extra])


def _phases(output: str) -> dict[str, tuple[list[float], float, float]]:
    """phase → (its terms' GB, its printed total, the GPU's GB) from a dry run's memory lines."""
    import re

    phases, current = {}, None
    for line in output.splitlines():
        if re.match(r"^  while .*:$", line):
            current = line.strip().rstrip(":")
            phases[current] = ([], None, None)
        elif current and (m := re.match(r"^    total +([\d.]+) GB of (\d+)$", line)):
            phases[current] = (phases[current][0], float(m[1]), float(m[2]))
            current = None
        elif current and (m := re.match(r"^    .+ +([\d.]+) GB$", line)):
            phases[current][0].append(float(m[1]))
    return phases


def _assert_terms_add_up(phases) -> None:
    for name, (terms, total, gpu) in phases.items():
        assert total == pytest.approx(sum(terms), abs=0.05 * len(terms)), name  # each term rounded to 0.1
        assert total < gpu == 80, name


def test_the_qwen3_recipe_dry_runs_training_on_8_gpus_under_80_gb(monkeypatch):
    result = _dry_run(monkeypatch, "train")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Qwen/Qwen3-8B-Base (shipped with s2lpo: pipeline/model_configs/Qwen/Qwen3-8B-Base): qwen3, 8.191 B " \
           "parameters (1.245 B in embeddings + head); generation_config eos ids [151643]" in out
    assert "BytedTsinghua-SIA/DAPO-Math-17k (hub dataset, loaded at run time)" in out
    assert "bank share G_w per step 16 14 12 10 7 5 3 0 0 0 0 0 0 0 0 0" in out
    assert "training  fsdp, float32 master weights, bfloat16 compute, gradient checkpointing on" in out
    assert "memory per GPU on 8 × 80 GB (declared in gpus)" in out
    phases = _phases(out)
    assert set(phases) == {"while the learner trains", "while vLLM samples", "while the weights sync into vLLM"}
    _assert_terms_add_up(phases)
    assert "weights + AdamW m, v (12 B/param, sharded over 8)                     12.3 GB" in out
    assert "KV cache 33.6 GB at 144 KiB/token = 49 sequences of 4608 tokens" in out
    assert "peak 69.4 GB per GPU while vLLM samples, of 80 GB" in out


@pytest.mark.parametrize("command, model, vllm_gb", [("explore", "Qwen/Qwen3-1.7B-Base: 1.721 B", "72.0"),
                                                      ("evaluate", "Qwen/Qwen3-8B-Base: 8.191 B", "72.0")])
def test_the_qwen3_recipe_dry_runs_sampling_on_one_80_gb_gpu(monkeypatch, command, model, vllm_gb):
    result = _dry_run(monkeypatch, command)
    assert result.exit_code == 0, result.output
    assert f"per GPU on 1 × 80 GB (declared in gpus); {model} parameters" in result.output
    phases = _phases(result.output)
    assert list(phases) == ["while vLLM samples"]
    _assert_terms_add_up(phases)
    assert phases["while vLLM samples"][1] == float(vllm_gb)


def test_fp32_ddp_at_8b_is_refused_in_one_line(monkeypatch):
    result = _dry_run(monkeypatch, "train", "--set", "distributed.strategy=ddp",
                      "--set", "distributed.param_dtype=null")
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert error == ["error: train: needs 239.3 GB per GPU while the learner trains but the 8 GPU(s) have 80 GB each; "
                     "biggest term: weights + AdamW m, v (12 B/param, replicated under DDP) 98.3 GB; set "
                     "distributed.strategy: fsdp under torchrun to shard it, or lora.r: 64"]


def test_the_recipes_old_vllm_settings_are_refused(monkeypatch):
    """fp32 vLLM weights inside a 0.3 share, as the recipe had them."""
    result = _dry_run(monkeypatch, "train", "--set", "rollout_dtype=null", "--set", "gpu_memory_utilization=0.3")
    assert result.exit_code == 2
    assert "error: train: vLLM's share (gpu_memory_utilization 0.3) leaves 0.0 GB of KV cache after 32.8 GB of " \
           "weights, less than one 32768-token sequence" in result.output


def _doc_dry_runs() -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) of every `$ s2lpo ... --dry-run` in the recipe's page, docs/recipe.md."""
    lines = (ROOT / "docs" / "recipe.md").read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("$ s2lpo ") and "recipes/qwen3-8b.yaml" in line and "--dry-run" in line:
            shown = []
            for follow in lines[i + 1 :]:
                if follow.startswith(("$ ", "```")):
                    break
                shown.append(follow)
            found.append((line[2:], shown))
    return found


def test_the_docs_show_every_stages_dry_run():
    commands = [c for c, _ in _doc_dry_runs()]
    assert all(any(c.startswith(f"s2lpo {stage} ") for c in commands) for stage in ("explore", "train", "evaluate"))


@pytest.mark.parametrize("command, shown", _doc_dry_runs(), ids=lambda x: x if isinstance(x, str) else "")
def test_the_docs_dry_runs_are_this_codes_output(monkeypatch, command, shown):
    import shlex

    stage, *args = shlex.split(command)[1:]
    args = [a for a in args if a not in ("--params", str(QWEN3.relative_to(ROOT)), "--dry-run")]
    result = _dry_run(monkeypatch, stage, *args)
    assert result.output.splitlines()[-len(shown):] == shown  # the refusal example shows only its last line
