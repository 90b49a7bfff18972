"""prepare.numerics: a family rebuilt on another x86 CPU is byte-equal when its kernels are pinned.

An AVX2-only CPU is emulated on this one by forcing torch's ATen kernels to AVX2 and MKL to its
AVX2 instructions (the variables a user's machine would otherwise decide)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testbed.numerics import ENV, Numerics, pin

ROOT = Path(__file__).parents[3]
AVX512_CPU = {"ATEN_CPU_CAPABILITY": "avx512"}
AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
TINY = ["train_size=64", "test_size=8", "test_flawed=2", "eval_samples=1", "eval_max_new_tokens=8",
        "explorer={layers: 1, hidden: 64, sft_steps: 8, seed: 1}",
        "learner={layers: 1, hidden: 128, sft_steps: 8, seed: 2}", "sft.warmup_steps=2"]


def test_pin_sets_the_kernel_variables():
    env = {"ATEN_CPU_CAPABILITY": "avx512", "OTHER": "x"}
    pin(Numerics.NATIVE, env)
    assert env == {"ATEN_CPU_CAPABILITY": "avx512", "OTHER": "x"}  # native leaves the machine's choice
    pin(Numerics.COMPATIBLE, env)
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "OTHER": "x"}
    assert ENV[Numerics.AVX2] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def _prepare(out: Path, cpu: dict, numerics: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", *AVX2_CPU)}
    env.update(cpu, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    sets = [a for s in TINY + [f"out_dir={out}", f"numerics={numerics}"] for a in ("--set", s)]
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "prepare", *sets], env=env, cwd=out.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _digests(out: Path) -> dict[str, str]:
    return {m: hashlib.sha256((out / m / "model.safetensors").read_bytes()).hexdigest() for m in ("explorer", "learner")}


@pytest.mark.slow
def test_pinned_kernels_give_byte_equal_families_on_an_avx512_and_an_avx2_cpu(tmp_path):
    import json

    runs = {(cpu, numerics): tmp_path / f"{cpu}-{numerics}" for cpu in ("avx512", "avx2")
            for numerics in ("native", "avx2")}
    cpus = {"avx512": AVX512_CPU, "avx2": AVX2_CPU}
    for pair in (list(runs)[:2], list(runs)[2:]):  # two at a time
        procs = [_prepare(runs[key], cpus[key[0]], key[1]) for key in pair]
        for proc in procs:
            assert proc.wait() == 0, proc.stderr.read()[-2000:]
    digests = {key: _digests(out) for key, out in runs.items()}
    # the control: with the machine's own kernels the two CPUs train different weights ...
    assert digests["avx512", "native"]["learner"] != digests["avx2", "native"]["learner"]
    # ... pinned, they train the same bytes
    assert digests["avx512", "avx2"] == digests["avx2", "avx2"]
    kernels = json.loads((runs["avx2", "avx2"] / "passk.json").read_text())["numerics"]
    assert kernels == {"setting": "avx2", "aten_capability": "AVX2", "mkl_branch": "AVX2"}
    native = json.loads((runs["avx512", "native"] / "passk.json").read_text())["numerics"]
    assert native == {"setting": "native", "aten_capability": "AVX512", "mkl_branch": "off"}
