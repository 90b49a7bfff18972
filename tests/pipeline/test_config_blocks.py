"""The shared config blocks: one home per setting, flat params.yaml keys in every stage."""

import dataclasses

import pytest

from pipeline.config import load_stage_config, to_dict
from pipeline.config_blocks import (EngineSettings, Generation, Preset, PresetSampling, PromptSource, Sampling,
                                    Scoring)
from pipeline.engines.base import EngineKind, SamplingParams
from pipeline.errors import UserError
from pipeline.evaluate.config import EvaluateConfig
from stage1_explore.config import ExploreConfig
from stage2_train.config import EvalSettings, TrainConfig

STAGES = {"explore": ExploreConfig, "train": TrainConfig, "evaluate": EvaluateConfig}
BLOCKS = {"explore": (PromptSource, Sampling, EngineSettings, Scoring),
          "train": (PromptSource, Sampling, EngineSettings, Scoring),
          "evaluate": (PromptSource, Generation, PresetSampling, EngineSettings, Scoring)}


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _load(section: str, *overrides: str):
    return load_stage_config(STAGES[section], section, params_path=None, overrides=list(overrides))


@pytest.mark.parametrize("section", list(STAGES))
def test_every_stage_holds_its_blocks_fields_as_flat_keys(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml: dataclass defaults plus --set
    cls = STAGES[section]
    for block in BLOCKS[section]:
        assert issubclass(cls, block) and _names(block) <= _names(cls)
    cfg = _load(section, "layout=qa", "question_field=q", "limit=3", "max_new_tokens=7", "generate_batch_size=5",
                "engine=hf", "revision=main", "tensor_parallel_size=2", "score_timeout_s=3")
    assert (cfg.layout, cfg.question_field, cfg.limit, cfg.max_new_tokens, cfg.generate_batch_size, cfg.engine,
            cfg.revision, cfg.tensor_parallel_size, cfg.score_timeout_s) == \
        ("qa", "q", 3, 7, 5, EngineKind.HF, "main", 2, 3.0)
    flat = to_dict(cfg)  # config.json: flat keys, as params.yaml writes them
    assert flat["layout"] == "qa" and flat["generate_batch_size"] == 5 and "batch_size" not in flat


def test_a_stage_redeclares_only_the_defaults_it_changes():
    explore, train, evaluate = ExploreConfig(), TrainConfig(), EvaluateConfig()
    assert (explore.temperature, explore.top_p, explore.top_k) == (0.7, 0.95, 0)  # the paper's explorer sampling
    assert (train.temperature, train.top_p, train.top_k) == (1.0, 1.0, 0)  # the block's: the raw distribution
    assert (explore.dtype, train.dtype, evaluate.dtype) == ("auto", "float32", "auto")
    assert (explore.gpu_memory_utilization, train.gpu_memory_utilization, evaluate.gpu_memory_utilization) == \
        (0.25, 0.3, 0.85)
    assert (explore.scoring_workers, train.scoring_workers, evaluate.scoring_workers) == (2, 0, 2)
    assert (explore.split, train.split, evaluate.split) == ("train", "train", "test")
    # a re-declared field keeps its block's position
    names = [f.name for f in dataclasses.fields(ExploreConfig)]
    assert names.index("temperature") < names.index("generate_batch_size") < names.index("scoring_workers")


@pytest.mark.parametrize("section", list(STAGES))
@pytest.mark.parametrize("override, needle", [
    ("top_p=0", "0 < top_p ≤ 1"),
    ("top_p=1.5", "0 < top_p ≤ 1"),
    ("temperature=0", "temperature > 0"),
    ("top_k=-1", "top_k ≥ 0"),
    ("max_new_tokens=0", "max_new_tokens must be ≥ 1"),
    ("limit=0", "limit must be ≥ 1"),
    ("generate_batch_size=0", "generate_batch_size and tensor_parallel_size must be ≥ 1"),
    ("gpu_memory_utilization=1.5", "need 0 < gpu_memory_utilization ≤ 1"),
    ("scoring_workers=-1", "need scoring_workers ≥ 0"),
])
def test_the_blocks_checks_hold_in_every_stage(section, override, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        _load(section, override)
    assert needle in str(err.value) and str(err.value).startswith(f"params.yaml: {section}: ")


def test_held_out_eval_default_is_todays_sampling():
    """plain: T 1.0, top-p 1.0, top-k 0, no penalty, n = samples (the stage-2 digests depend on it)."""
    ev = EvalSettings(samples=8, max_new_tokens=12)
    assert ev.preset is Preset.PLAIN
    assert ev.sampling(seed=5) == SamplingParams(n=8, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12,
                                                 seed=5, presence_penalty=0.0)


def test_held_out_eval_takes_the_evaluate_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paper = _load("train", "eval.preset=qwen3-nothink", "eval.samples=16").eval.sampling(seed=0)
    assert (paper.n, paper.temperature, paper.top_p, paper.top_k, paper.presence_penalty) == (16, 0.7, 0.8, 20, 1.5)
    one = _load("train", "eval.preset=qwen3-nothink", "eval.top_k=0").eval.sampling(seed=0)
    assert (one.temperature, one.top_p, one.top_k, one.presence_penalty) == (0.7, 0.8, 0, 1.5)
    # the same resolution as `s2lpo evaluate`'s, value for value
    evaluate = _load("evaluate", "preset=qwen3-nothink", "top_k=0", "samples=16", "max_new_tokens=48").sampling()
    train = _load("train", "eval.preset=qwen3-nothink", "eval.top_k=0", "eval.samples=16").eval.sampling(seed=0)
    assert evaluate == train
    with pytest.raises(UserError, match="train.eval.preset: 'greedy' is not one of 'qwen3-nothink', 'plain'"):
        _load("train", "eval.preset=greedy")
    with pytest.raises(UserError, match="0 < top_p ≤ 1"):
        _load("train", "eval.top_p=0")
