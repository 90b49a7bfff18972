"""Stage 2 on several processes: how ranks split a step, and torchrun runs on CPU (gloo)
whose update equals the single-process one.

The equivalence: the tiny world's step 1 (α = 1, so every response is a bank row and no
sampling noise differs) over 2 ranks against 1 process, same global batch of 6 prompts ×
G = 4 in two mini-batches of 12. Weights after the step may differ only by float
reassociation (gradients summed in another order), amplified by Adam where a gradient is
near ε: measured 3.1e-7 for DDP and for FSDP, while the step moves weights by up to 2.0e-3.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import to_dict
from pipeline.errors import UserError
from stage2_train.config import DistributedSettings, EvalSettings, TrainConfig
from stage2_train.distributed import Dist, Strategy, init_distributed, split_range
from stage2_train.metrics import read_jsonl
from stage2_train.rl_math import Aggregation, normaliser_from_counts
from stage2_train.setup_run import setup
from stage2_train.trainer import run_train

from .conftest import tiny_config

TOLERANCE = 1e-6  # max |θ(2 ranks) − θ(1 process)| after one step
WORKER = Path(__file__).with_name("torchrun_train.py")


def _run(cfg, **kw):
    return run_train(cfg, echo=lambda *_: None, progress=False, **kw)


@pytest.mark.parametrize("n, parts, expected", [
    (10, 3, [range(0, 4), range(4, 7), range(7, 10)]),
    (6, 2, [range(0, 3), range(3, 6)]),
    (2, 4, [range(0, 1), range(1, 2), range(2, 2), range(2, 2)]),
])
def test_split_range_is_numpy_array_split(n, parts, expected):
    assert [split_range(n, parts, i) for i in range(parts)] == expected


def test_train_ranges_partition_the_prompts_inside_generation_groups():
    ranks = [Dist(rank=r, world_size=4, tp=2) for r in range(4)]
    assert [d.rollout_range(10) for d in ranks] == [range(0, 5)] * 2 + [range(5, 10)] * 2
    assert [d.train_range(10) for d in ranks] == [range(0, 3), range(3, 5), range(5, 8), range(8, 10)]
    assert [d.generation_leader for d in ranks] == [True, False, True, False]
    plain = [Dist(rank=r, world_size=3).train_range(7) for r in range(3)]
    assert plain == [range(0, 3), range(3, 5), range(5, 7)]


def test_normaliser_from_counts_sums_before_dividing():
    # a mini-batch of 5 rows and 37 real tokens split as (2 rows, 20) + (3 rows, 17)
    assert normaliser_from_counts(20.0 + 17.0, 5, Aggregation.TOKEN_MEAN, max_len=16) == 37.0
    assert normaliser_from_counts(0.0, 5, Aggregation.TOKEN_MEAN, max_len=16) == 1.0
    assert normaliser_from_counts(37.0, 5, Aggregation.SEQUENCE_MEAN, max_len=16) == 5.0
    assert normaliser_from_counts(37.0, 5, Aggregation.CONSTANT, max_len=16) == 80.0


def test_one_process_without_torchrun_has_no_process_group():
    d = init_distributed(Strategy.FSDP, tp=2, env={"WORLD_SIZE": "1"})
    assert not d.active and not d.fsdp and d.tp == 1 and d.train_range(5) == range(0, 5)
    assert d.sum(2.5) == 2.5 and d.gather("x") == ["x"] and d.from_main(lambda: 7) == 7
    assert not torch.distributed.is_initialized()


def test_config_refusals(train_config):
    with pytest.raises(ValueError, match="param_dtype is FSDP's mixed precision"):
        train_config(distributed=DistributedSettings(param_dtype="bfloat16"))
    with pytest.raises(ValueError, match="vllm_sleep_level"):
        train_config(vllm_sleep_level=3)
    with pytest.raises(UserError, match="prompts_per_step 6 is fewer than the 8 torchrun processes"):
        setup(train_config(), Dist(world_size=8), echo=lambda *_: None)


def test_resume_with_another_world_size_is_refused(train_config):
    cfg = train_config(steps=1, checkpoint_every=1, eval=EvalSettings(every=0, problems=None))
    _run(cfg)
    state = Path(cfg.out_dir) / "checkpoints/step-000001/state.json"
    saved = json.loads(state.read_text())
    assert saved["world_size"] == 1
    state.write_text(json.dumps(dict(saved, world_size=2)))
    with pytest.raises(UserError, match=r"written by a run of 2 process\(es\), this one has 1; resume with the same"):
        _run(dataclasses.replace(cfg, steps=2), resume=True)


class _FakeVLLM:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append("generate")
        return []

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({','.join(tags)})")

    def load_weights(self, weights):
        self.calls.append("load_weights")


@pytest.mark.parametrize("level, expected", [
    (0, ["generate", "load_weights", "generate"]),
    (1, ["generate", "sleep(1)", "wake_up(weights)", "load_weights", "wake_up(kv_cache)", "generate"]),
    (2, ["generate", "sleep(2)", "wake_up(weights)", "load_weights", "wake_up(kv_cache)", "generate"]),
])
def test_colocated_vllm_sleeps_while_the_learner_trains(level, expected):
    from stage2_train.rollout_engines import ColocatedVLLM

    fake = _FakeVLLM()
    engine = ColocatedVLLM(fake, sleep_level=level)
    engine.generate([], None)
    engine.release()  # the update runs here
    engine.load_weights({})
    engine.generate([], None)
    assert fake.calls == expected


def test_vllm_woken_without_weights_refuses_to_sample():
    from stage2_train.rollout_engines import ColocatedVLLM

    engine = ColocatedVLLM(_FakeVLLM(), sleep_level=2)
    engine.release()
    with pytest.raises(RuntimeError, match="load_weights must come before generate"):
        engine.generate([], None)


# ---- torchrun on CPU (gloo): 2 ranks against 1 process -------------------------------------

@pytest.fixture(scope="module")
def one_step(train_world, tmp_path_factory):
    """One single-process step on one thread (the ranks run on one thread each)."""
    cfg = tiny_config(train_world, tmp_path_factory.mktemp("single") / "run", steps=1, threads=1, tensorboard=False,
                      eval=EvalSettings(every=0, problems=None))
    threads = torch.get_num_threads()
    try:
        _run(cfg)
    finally:
        torch.set_num_threads(threads)
    return cfg


def _params(cfg: TrainConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump({"train": to_dict(cfg)}))
    return str(path)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return done


def _weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _assert_same_step(single: dict, ranks: dict) -> None:
    exact = ("groups", "g_w", "g_s", "reward", "accuracy", "tokens/bank", "tokens/online", "updates", "adv/std",
             "bank/responses", "online/responses", "zero_variance_groups", "tokens/online_generated")
    assert {k: ranks[k] for k in exact} == {k: single[k] for k in exact}
    for key in ("loss", "grad_norm", "entropy", "kl", "clip_fraction"):
        assert ranks[key] == pytest.approx(single[key], rel=1e-5, abs=1e-9), key


def _assert_equivalent(one_step, model_dir, metrics) -> None:
    single = _weights(Path(one_step.out_dir) / "model")
    moved = _max_diff(single, _weights(one_step.learner))
    diff = _max_diff(single, _weights(model_dir))
    assert moved > 1000 * TOLERANCE and diff <= TOLERANCE, (moved, diff)
    _assert_same_step(read_jsonl(Path(one_step.out_dir) / "metrics.jsonl")[1], metrics)
    print(f"max |θ(2 ranks) − θ(1 process)| = {diff:.2e} (tolerance {TOLERANCE:.0e}); "
          f"max |Δθ| of the step {moved:.2e}")


@pytest.mark.slow
def test_two_ddp_ranks_make_the_single_process_update(one_step, tmp_path):
    cfg = dataclasses.replace(one_step, out_dir=str(tmp_path / "ddp"))
    done = _torchrun("-m", "pipeline.cli", "train", "--params", _params(cfg, tmp_path / "params.yaml"), "--no-progress")
    assert "on 2 ranks (ddp)" in done.stdout
    _assert_equivalent(one_step, tmp_path / "ddp/model", read_jsonl(tmp_path / "ddp/metrics.jsonl")[1])


@pytest.mark.slow
def test_two_fsdp_ranks_make_the_single_process_update_and_resume_exactly(one_step, tmp_path):
    part = dataclasses.replace(one_step, out_dir=str(tmp_path / "part"), checkpoint_every=1,
                               distributed=DistributedSettings(strategy=Strategy.FSDP))
    runs = [(part, False), (dataclasses.replace(part, steps=2), True),  # step 2 samples online (α = 0.5)
            (dataclasses.replace(part, steps=2, out_dir=str(tmp_path / "whole")), False)]
    spec = {"runs": [{"params": _params(c, tmp_path / f"params-{i}.yaml"), "resume": r}
                     for i, (c, r) in enumerate(runs)],
            "gather_check": str(tmp_path / "whole/model")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    _torchrun(str(WORKER), str(tmp_path / "spec.json"))
    step1 = read_jsonl(tmp_path / "part/metrics.jsonl")[1]
    _assert_equivalent(one_step, tmp_path / "part/checkpoints/step-000001/model", step1)
    a, b = _weights(tmp_path / "part/model"), _weights(tmp_path / "whole/model")
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed at step 1 = uninterrupted
    def untimed(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(tmp_path / run)]

    strip = untimed("part/metrics.jsonl")
    assert strip == untimed("whole/metrics.jsonl")
    assert strip[2]["tokens/online_generated"] > 0
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in ranks] == [4.0, 4.0] and [r["max"] for r in ranks] == [2, 2]
    assert [r["gather"] for r in ranks] == [[0, 1], [0, 1]]
    assert [r["from_main_error"] for r in ranks] == ["refused on rank 0"] * 2
    assert ranks[0]["gather_max_diff"] == {"merged": 0.0, "gathered": 0.0}
    assert ranks[1]["gather_max_diff"] == {"merged": 0.0}
