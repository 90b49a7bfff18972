"""Micro-batches at their own width: untrimmed vs trimmed vs trimmed + length-sorted.

Responses of varied length (uniform in `--min-response` … `--max-response` tokens after a
`--prompt`-token prompt) are packed into one step's batch. Until this benchmark's commit
every micro-batch kept that batch's padded width, so every forward ran at the longest row
of the step (`Packed.select` did not trim). Now a micro-batch is trimmed to its own longest
row, and a mini-batch of several micro-batches takes its rows longest first
(`stage2_train.policy.micro_batches`), so each micro-batch pads as little as it can.

Timed, side by side in one process, alternating the variants round by round:
- the no-grad pass (old / reference log-probs: `batched_logprobs` over every row), and
- one mini-batch's training forward + backward (`ppo._micro_loss` on each micro-batch,
  the mini-batch's normaliser), the same loss and gradient up to float rounding;
with a random Qwen3 (`--layers`, `--hidden`, `--vocab`) on the CPU, fp32, one thread.
Printed: median CPU seconds per variant (process time: the work, not the machine's load)
and the ratios to the untrimmed path, the share of padding, and each variant's loss.

Usage:  python benchmarks/trim_microbatches.py [--rows 32] [--micro 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch  # noqa: F401 - the benchmark is torch throughout


def untrimmed_select(self, index):
    """`Packed.select` before this benchmark's commit: rows only, the batch's full width."""
    from stage2_train.policy import Packed

    return Packed(self.input_ids[index], self.attention_mask[index], self.response_mask[index],
                  self.explorer_logprobs[index], self.from_bank[index])


def in_order(lengths, size: int):
    """Micro-batches in row order (the grouping before this commit)."""
    import torch

    return list(torch.arange(len(lengths)).split(size))


@contextlib.contextmanager
def variant(name: str):
    """Run the stage-2 code as it was (`untrimmed`), trimmed only, or trimmed + sorted (now)."""
    from stage2_train import policy, ppo

    saved = policy.Packed.select, policy.micro_batches, ppo.micro_batches
    if name in ("untrimmed", "trimmed"):
        policy.micro_batches = ppo.micro_batches = in_order
    if name == "untrimmed":
        policy.Packed.select = untrimmed_select
    try:
        yield
    finally:
        policy.Packed.select, policy.micro_batches, ppo.micro_batches = saved


def build(args):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from stage2_train.policy import pack
    from stage2_train.rollout import Response

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      max_position_embeddings=args.prompt + args.max_response + 8, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).train()
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.min_response, args.max_response + 1, (args.rows,), generator=gen).tolist()
    rows = [Response(tuple(torch.randint(1, args.vocab, (args.prompt,), generator=gen).tolist()),
                     tuple(torch.randint(1, args.vocab, (k,), generator=gen).tolist()), "", 0.0, False, i % 2 == 0,
                     False) for i, k in enumerate(lengths)]
    return model, pack(rows, 0), lengths


def time_nograd(model, batch, micro: int) -> float:
    from stage2_train.policy import batched_logprobs

    t = time.process_time()
    batched_logprobs(model, batch, micro)
    return time.process_time() - t


def time_update(model, batch, micro: int) -> tuple[float, float]:
    """Forward + backward of one mini-batch (all rows) in micro-batches; (seconds, loss)."""
    import torch

    from stage2_train import ppo, rl_math
    from stage2_train.config import TrainConfig

    cfg = TrainConfig()
    n = len(batch.input_ids)
    old = ppo.OldLogprobs(torch.zeros(batch.response_mask.shape))
    inputs = ppo.LossInputs(batch, torch.arange(n), old, torch.linspace(-1, 1, n), torch.zeros(batch.response_mask.shape))
    norm = rl_math.loss_normaliser(batch.response_mask, cfg.loss.aggregation, max_len=cfg.max_new_tokens)
    sums = {k: 0.0 for k in ("kl", "tokens", "loss", "entropy", "clip", "dual_clip")}
    t, loss = time.process_time(), 0.0
    for part in ppo.micro_batches(batch.lengths, micro):
        value = ppo._micro_loss(model, inputs.select(part), cfg.loss, norm, sums)
        value.backward()
        loss += float(value.detach())
    model.zero_grad(set_to_none=True)
    return time.process_time() - t, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--min-response", type=int, default=8)
    parser.add_argument("--max-response", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    model, batch, lengths = build(args)
    width = batch.input_ids.shape[1]
    real = int(batch.attention_mask.sum())
    print(f"{args.rows} rows, prompt {args.prompt} + responses {min(lengths)}–{max(lengths)} tokens "
          f"(mean {statistics.mean(lengths):.0f}); micro-batches of {args.micro}; Qwen3 {args.layers} layers, "
          f"hidden {args.hidden}, vocab {args.vocab}; {args.threads} threads")
    print(f"untrimmed: every forward at the batch's width {width}: {1 - real / (args.rows * width):.0%} of its "
          "tokens are padding")
    names = ("untrimmed", "trimmed", "trimmed+sorted")
    nograd = {k: [] for k in names}
    update = {k: [] for k in names}
    losses = {}
    for _ in range(args.rounds):
        for name in names:
            with variant(name):
                nograd[name].append(time_nograd(model, batch, args.micro))
                seconds, losses[name] = time_update(model, batch, args.micro)
                update[name].append(seconds)
    base_n, base_u = statistics.median(nograd["untrimmed"]), statistics.median(update["untrimmed"])
    for name in names:
        n, u = statistics.median(nograd[name]), statistics.median(update[name])
        print(f"  {name:15s} no-grad pass {n:7.2f} CPU-s (ratio {n / base_n:.2f})   forward+backward {u:7.2f} CPU-s "
              f"(ratio {u / base_u:.2f})   loss {losses[name]:.9f}")
    speed = (base_n + base_u) / (statistics.median(nograd[names[-1]]) + statistics.median(update[names[-1]]))
    print(f"speed-up of old + training passes, untrimmed / trimmed+sorted = {speed:.2f}x")


if __name__ == "__main__":
    main()
