"""The startup memory check of every stage: it runs first, reads only config.json, and
refuses in one line a configuration that cannot fit the GPUs the process sees (here an
80 GB CUDA device is simulated, since the tests run on CPU); without CUDA it is skipped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config import load_stage_config
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
QWEN3 = ROOT / "recipes" / "qwen3-8b.yaml"


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")


@pytest.fixture
def one_80gb_gpu(monkeypatch, offline):
    """What torch.cuda reports on an 80 GB GPU (only the calls the check makes)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * 10**9))


def test_train_refuses_fp32_ddp_at_8b_before_loading_anything(one_80gb_gpu, monkeypatch, tmp_path):
    from stage2_train.config import TrainConfig
    from stage2_train.trainer import run_train

    monkeypatch.setenv("WORLD_SIZE", "8")  # as under torchrun: the check comes before the process group
    out = tmp_path / "run"
    cfg = load_stage_config(TrainConfig, "train", params_path=QWEN3, overrides=[
        "distributed.strategy=ddp", "distributed.param_dtype=null", f"out_dir={out}"])
    with pytest.raises(UserError) as exc:
        run_train(cfg, progress=False)
    assert str(exc.value).startswith("train: needs 239.3 GB per GPU while the learner trains but the 8 GPU(s) "
                                     "have 80 GB each; biggest term: weights + AdamW m, v (12 B/param, replicated")
    assert not out.exists()


def test_the_committed_recipe_passes_the_check_on_8_gpus(one_80gb_gpu, monkeypatch):
    from stage2_train.config import TrainConfig
    from stage2_train.plan import memory_report

    monkeypatch.setenv("WORLD_SIZE", "8")
    lines, error = memory_report(load_stage_config(TrainConfig, "train", params_path=QWEN3))
    assert error is None
    assert lines[0].startswith("memory per GPU on 8 × 80 GB (seen)")
    monkeypatch.setenv("WORLD_SIZE", "2")  # the same recipe on 2 ranks: the sharded state is 4× larger
    lines, error = memory_report(load_stage_config(TrainConfig, "train", params_path=QWEN3))
    assert str(error) == ("train: needs 115.7 GB per GPU while the learner trains but the 2 GPU(s) have 80 GB each; "
                          "biggest term: weights + AdamW m, v (12 B/param, sharded over 2) 49.1 GB; launch more ranks "
                          "(torchrun --nproc-per-node / --nnodes)")


def test_explore_refuses_a_share_too_small_for_the_explorer(one_80gb_gpu):
    from stage1_explore.config import ExploreConfig
    from stage1_explore.explore import run_explore

    cfg = load_stage_config(ExploreConfig, "explore", params_path=QWEN3, overrides=["gpu_memory_utilization=0.05"])
    with pytest.raises(UserError, match=r"^explore: vLLM's share \(gpu_memory_utilization 0.05\) leaves 0.0 GB of KV "
                                        r"cache after 3.4 GB of weights, .*set dtype: bfloat16"):
        run_explore(cfg)  # before the hub dataset of prompts or the tokenizer is read


def test_evaluate_refuses_before_loading_the_model(one_80gb_gpu, tmp_path):
    from pipeline.evaluate.config import EvaluateConfig
    from pipeline.evaluate.run import run_evaluate

    cfg = load_stage_config(EvaluateConfig, "evaluate", params_path=QWEN3,
                            overrides=["gpu_memory_utilization=0.2", f"out_dir={tmp_path / 'eval'}"])
    with pytest.raises(UserError, match=r"^evaluate: vLLM's share \(gpu_memory_utilization 0.2\) leaves 0.0 GB"):
        run_evaluate(cfg, progress=False)
    assert not (tmp_path / "eval").exists()


def test_without_cuda_a_real_run_skips_the_check(offline, monkeypatch):
    import torch

    from stage2_train.config import TrainConfig
    from stage2_train.plan import memory_report

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_stage_config(TrainConfig, "train", params_path=QWEN3, overrides=["distributed.strategy=ddp",
                                                                          "distributed.param_dtype=null"])
    assert memory_report(cfg) is None  # the CPU testbed trains as before
    assert memory_report(cfg, dry_run=True)[1] is not None  # the dry run still plans for the declared 8 × 80 GB
