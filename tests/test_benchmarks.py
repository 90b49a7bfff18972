"""The benchmarks' measuring code (the benchmarks themselves run by hand: docs/performance.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_memory_sees_a_child_process_peak_and_its_exit_status():
    mem = _load("stage_memory")
    code = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    status, tree, own, seconds, _ = mem.measure([sys.executable, "-c", code])
    assert status == 0 and own >= 300 and tree >= 300 and seconds >= 0.5
    status, *_, last = mem.measure([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert status == 1 and last == "boom"


def test_train_vs_trl_counts_the_matmul_parameters_and_flops(char_tokenizer):
    from pipeline.testbed.model import ModelShape, build_model

    bench = _load("train_vs_trl")
    model = build_model(ModelShape(layers=2, hidden=64), char_tokenizer, seed=0)
    n, layers, width = bench.model_shape(model)
    cfg = model.config
    per_layer = (cfg.hidden_size * width  # q
                 + 2 * cfg.hidden_size * cfg.num_key_value_heads * cfg.head_dim  # k, v
                 + width * cfg.hidden_size  # o
                 + 3 * cfg.hidden_size * cfg.intermediate_size)  # gate, up, down
    assert (layers, width) == (2, cfg.num_attention_heads * cfg.head_dim)
    assert n == 2 * per_layer + cfg.hidden_size * cfg.vocab_size  # + the (tied) LM head, no embedding lookup
    assert bench.forward_flops((n, layers, width), [10, 20]) == pytest.approx(
        2 * n * 30 + 2 * layers * width * (100 + 400))


def test_trim_microbatches_variants_compute_the_same_loss_and_restore_the_code():
    import argparse

    from stage2_train import policy, ppo

    bench = _load("trim_microbatches")
    args = argparse.Namespace(rows=6, prompt=4, min_response=2, max_response=40, layers=1, hidden=32, vocab=64)
    model, batch, lengths = bench.build(args)
    before = policy.Packed.select, policy.micro_batches, ppo.micro_batches
    losses, widths = {}, {}
    for name in ("untrimmed", "trimmed", "trimmed+sorted"):
        with bench.variant(name):
            widths[name] = [batch.select(m).input_ids.shape[1] for m in ppo.micro_batches(batch.lengths, 2)]
            losses[name] = bench.time_update(model, batch, 2)[1]
    assert (policy.Packed.select, policy.micro_batches, ppo.micro_batches) == before
    full = batch.input_ids.shape[1]
    assert widths["untrimmed"] == [full] * 3 and max(widths["trimmed"]) == full
    assert widths["trimmed+sorted"] == sorted(widths["trimmed+sorted"], reverse=True)
    assert sum(widths["trimmed+sorted"]) <= sum(widths["trimmed"]) < 3 * full
    assert losses["trimmed"] == pytest.approx(losses["untrimmed"], rel=1e-6)
    assert losses["trimmed+sorted"] == pytest.approx(losses["untrimmed"], rel=1e-6)
