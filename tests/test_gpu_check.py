"""benchmarks/gpu_check.py: its CPU small mode runs end to end and reports every field; its
one-line refusal when packages are missing; its estimator adapter and its tolerances."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PHASES = ("matmul", "testbed", "qwen3_tiny", "memory_sweep", "loss_head")
CHECKS = {"testbed/fp32 step 1 vs CPU", "testbed/bank draws of steps 1-5", "testbed/mean reward of steps 2-5",
          "testbed/bf16 step 1 vs CPU fp32", "testbed/fsdp-bf16 step 1 vs CPU fp32", "testbed/resume 3+2 vs 5 steps",
          "testbed/explorer pass@1 vs CPU", "testbed/all-reduce on one rank", "qwen3_tiny/generate and train",
          "memory_sweep/finite losses", "loss_head/bfloat16 chunked = plain", "loss_head/float32 chunked = plain"}


def _load(name: str):
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_packages_stop_with_one_line_naming_the_wheels():
    # -S: no site-packages, so torch, transformers and math-verify are all missing
    proc = subprocess.run([sys.executable, "-S", str(SCRIPT), "--device", "cpu", "--small"], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing Python packages; carry the wheels torch, ")
    assert "math_verify-0.9.0-py3-none-any.whl" in lines[0] and "antlr4_python3_runtime-4.13.2" in lines[0]
    assert _load("gpu_check").missing_wheels((("json", "x"), ("no_such_module_s2lpo", "no_such-1.0.whl"))) == [
        "no_such-1.0.whl"]


def test_the_estimate_adapter_is_the_packages_training_phase():
    from pipeline.model_configs import model_config

    gc = _load("gpu_check")
    config = model_config("Qwen/Qwen3-8B-Base").config
    items = gc.package_memory_estimate(config, prompt_tokens=512, response_tokens=4096)
    n = 8_190_735_360  # Qwen3-8B-Base parameters (transformers' count, tests/pipeline/test_memory.py)
    assert items["weights + AdamW m, v (12 B/param, one process)"] == pytest.approx(12 * n / 1e9)
    assert items["reference model (4 B/param, one process)"] == pytest.approx(4 * n / 1e9)
    assert not any(k.startswith("CUDA context") for k in items)  # max_memory_allocated does not count it
    one = gc.package_memory_estimate(gc.QWEN3_06B, prompt_tokens=200, response_tokens=512)
    longer = gc.package_memory_estimate(gc.QWEN3_06B, prompt_tokens=200, response_tokens=4096)
    half = gc.package_memory_estimate(gc.QWEN3_06B, prompt_tokens=200, response_tokens=4096, dtype="bfloat16")
    assert 0 < sum(one.values()) < sum(longer.values()) and sum(half.values()) < sum(longer.values())


def test_compare_applies_atol_plus_rtol_and_fails_missing_values():
    rep = _load("gpu_check_report")
    ref = [{"loss": 1.0, "kl": 0.0}, {"loss": 2.0, "kl": None}]
    assert rep.compare([{"loss": 1.0015, "kl": 0.0}], ref, [1], ("loss", "kl"), rtol=1e-3, atol=1e-3)["ok"]
    out = rep.compare([{"loss": 1.0025, "kl": 0.0}], ref, [1], ("loss",), rtol=1e-3, atol=1e-3)
    assert not out["ok"] and out["max_abs_diff"] == pytest.approx(0.0025) and "step 1 loss" in out["worst"]
    assert not rep.compare([{}, {"loss": float("nan")}], ref, [2], ("loss",), rtol=1.0, atol=1.0)["ok"]
    assert rep.compare([{}, {"loss": 2.0}], ref, [2], ("kl",), rtol=0.0, atol=0.0)["ok"]  # absent on both sides


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small", "--out", str(out)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.txt").read_text()


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_small_mode_reports_every_field(small_report):
    report, text = small_report
    assert report["ok"] is True and (report["schema"], report["mode"], report["device"]) == (1, "small", "cpu")
    assert report["env"]["gpu"] is None and report["env"]["torch"] and _positive(report["wall_s"])
    assert text.startswith("gpu-check (small, cpu): OK")
    ph = report["phases"]
    assert set(ph) == set(PHASES)
    for name in PHASES:
        assert ph[name]["ok"] is True and ph[name]["error"] is None and _positive(ph[name]["seconds"]), name
    assert _positive(ph["matmul"]["tflops"]) and ph["matmul"]["n"] == 512
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == CHECKS and all(c["ok"] for c in checks.values())
    assert checks["testbed/resume 3+2 vs 5 steps"]["bitwise"] is True  # CPU: a resumed run repeats exactly
    assert checks["testbed/fp32 step 1 vs CPU"]["max_abs_diff"] == 0.0  # both sides are the CPU here


@pytest.mark.slow
def test_small_mode_testbed_runs(small_report):
    tb = small_report[0]["phases"]["testbed"]
    assert _positive(tb["prepare"]["seconds"]) and set(tb["prepare"]["pass_at_1"]) == {"explorer", "learner"}
    for role in ("reference", "target"):
        ex = tb[role]["explore"]
        assert ex["rows"] == 32 * 4 and 0.0 <= ex["pass_at_1"] <= 1.0 and ex["peak_cuda_mib"] is None
        assert tb[role]["device"] == "cpu" and _positive(ex["seconds"])
    runs = tb["target"]["train"]
    assert set(runs) == {"fp32", "resume", "bf16", "fsdp-bf16"} and set(tb["reference"]["train"]) == {"fp32"}
    for name, run in runs.items():
        assert run["steps"] == 5 and len(run["metrics"]) == 5, name
        assert all(math.isfinite(m["loss"]) and math.isfinite(m["entropy"]) for m in run["metrics"])
        assert [m["g_w"] for m in run["metrics"]] == [4.0, 3.0, 2.0, 1.0, 0.0]  # linear α 1 → 0 over 5 steps, G 4
        assert _positive(run["step_times"]["step"]["mean_s"]) and run["peak_cuda_mib"] is None
        assert run["used_cuda"] is None and isinstance(run["fsdp_active"], bool)
    assert (runs["bf16"]["dtype"], runs["fp32"]["dtype"]) == ("bfloat16", "float32")
    assert runs["resume"]["first_part"]["steps"] == 3 and runs["resume"]["weights_max_abs_diff_vs_fp32"] == 0.0
    fsdp = runs["fsdp-bf16"]
    assert (fsdp["backend"], fsdp["world_size"], fsdp["all_reduce_ok"]) == ("gloo", 1, True)
    hf = tb["target"]["hf_engine"]
    assert hf["device"] == "cpu" and hf["sequences"] == 32 * 4 and hf["tokens"] > 0 and _positive(hf["tokens_per_s"])


@pytest.mark.slow
def test_small_mode_qwen3_memory_and_loss_head(small_report):
    ph = small_report[0]["phases"]
    q = ph["qwen3_tiny"]
    assert q["vocab_size"] == 151936 and q["parameters"] > 151936 * 64 and q["generate"]["tokens"] > 0
    assert q["train_step"]["steps"] == 1 and math.isfinite(q["train_step"]["metrics"][0]["loss"])
    sweep = ph["memory_sweep"]
    assert set(sweep["runs"]) == {"float32", "bfloat16"} and sweep["micro_batch"] == 1
    for rows in sweep["runs"].values():
        assert [r["response_tokens"] for r in rows] == [16, 32]
        assert all(r["peak_cuda_mib"] is None and r["measured_over_estimate"] is None for r in rows)
        assert all(_positive(r[k]) for r in rows for k in ("step_s", "forward_backward_s", "estimate_mib"))
        assert rows[0]["estimate_mib"] < rows[1]["estimate_mib"]
    lh = ph["loss_head"]
    assert (lh["vocab"], lh["rows"], lh["length"]) == (151936, 1, 64)
    for dtype in ("bfloat16", "float32"):
        r = lh[dtype]
        assert _positive(r["plain"]["seconds"]) and _positive(r["chunked"]["seconds"])
        assert r["plain"]["peak_cuda_mib"] is None and r["memory_ratio_chunked_over_plain"] is None
        assert r["max_abs_logprob_diff"] <= 1e-3
