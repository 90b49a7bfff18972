"""Peak memory of the loss head at a real vocabulary: chunked log-probs against the plain ones.

At Qwen3's 151,936-token vocabulary the per-token log-probs and entropy of one micro-batch
dominate the learner's activation memory: the plain computation keeps a float32 copy of
the (N, L, V) logits for backward (for a bf16 learner) and builds two more full float32
tensors for the entropy (softmax, and softmax · logits). `stage2_train.policy` upcasts in
chunks of ≤ 256 MiB and, for half-precision logits, saves only the bf16 logits
(`SelectiveLogSoftmax`).

Each variant runs in a fresh subprocess: a 1-layer Qwen3 (hidden 64) with the real
vocabulary, one micro-batch of `--rows` × `--length` tokens, forward with entropy (as the
training forward does), backward of the summed log-probs. Printed: the peak RSS above a
baseline process that builds the same model and batch but runs nothing, the time, and the
ratio chunked / plain — for bf16 and float32 learners.

Usage:  python benchmarks/logprob_memory.py [--rows 2] [--length 1024] [--vocab 151936]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("baseline", "plain", "chunked")


def plain_token_logprobs(model, input_ids):
    """The computation before chunking (stage2_train/policy.py until this benchmark's commit)."""
    import torch

    logits = model(input_ids=input_ids).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = lse - (probs * logits).sum(-1)
    return logp, entropy


def child(variant: str, dtype: str, rows: int, length: int, vocab: int) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from stage2_train.policy import Packed, token_logprobs

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).to(getattr(torch, dtype))
    ids = torch.randint(0, vocab, (rows, length))
    batch = Packed(ids, torch.ones_like(ids), torch.ones(rows, length - 1), torch.zeros(rows, length - 1),
                   torch.zeros(rows, dtype=torch.bool))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if variant != "baseline":
        logp, entropy = (plain_token_logprobs(model, ids) if variant == "plain"
                         else token_logprobs(model, batch, with_entropy=True))
        logp.sum().backward()
        assert torch.isfinite(entropy).all()
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "before_mib": before / 1024, "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.rows, args.length, args.vocab)
        return
    logits_mib = args.rows * (args.length - 1) * args.vocab * 4 / 2**20
    print(f"loss head of one micro-batch: {args.rows} rows × {args.length} tokens, vocabulary {args.vocab:,} "
          f"(float32 logits: {logits_mib:,.0f} MiB); forward with entropy + backward")
    for dtype in ("bfloat16", "float32"):
        out = {}
        for variant in VARIANTS:
            proc = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--length", str(args.length),
                                   "--vocab", str(args.vocab), "--child", variant, dtype],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"error: the {variant}/{dtype} run failed: {proc.stderr.strip().splitlines()[-1:]}")
            out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        base = out["baseline"]["peak_mib"]
        plain, chunked = (out[v]["peak_mib"] - base for v in ("plain", "chunked"))
        print(f"  {dtype:8s}  plain {plain:7,.0f} MiB {out['plain']['seconds']:6.2f} s   chunked {chunked:7,.0f} MiB "
              f"{out['chunked']['seconds']:6.2f} s   memory ratio chunked / plain = {chunked / plain:.2f}")


if __name__ == "__main__":
    main()
