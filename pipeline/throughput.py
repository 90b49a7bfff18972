"""Time bounds for a stage-2 run from assumed hardware rates: pure arithmetic, never measurements.

- decoding reads every weight and the KV cache of every running sequence once per token
  from HBM (the memory-bandwidth roofline): one decode step of `seqs` sequences at a mean
  context `ctx` moves weights + seqs·ctx·kv bytes;
- training costs 12·N FLOPs per token: forward and backward 6N, the checkpointed recompute
  2N, the old and reference log-probs 2N each (attention, ~7% at 4k tokens, is left out).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    tflops: float = 989.0  # dense bf16 TFLOP/s per GPU (H100 SXM)
    mfu: float = 0.4  # assumed share of it reached
    hbm_tbs: float = 3.35  # HBM TB/s per GPU (H100 SXM)


def decode_tokens_per_s(*, weights_bytes: float, kv_bytes_per_token: float, seqs: float, ctx: float,
                        hbm_tbs: float) -> float:
    """Roofline decode rate of one GPU running `seqs` sequences at mean context `ctx`."""
    step_s = (weights_bytes + seqs * ctx * kv_bytes_per_token) / (hbm_tbs * 1e12)
    return seqs / step_s


def training_seconds(*, params: int, tokens: float, gpus: int, rates: Rates) -> float:
    """One step's training time at 12·N FLOPs per token."""
    return 12 * params * tokens / (gpus * rates.tflops * 1e12 * rates.mfu)
