"""Stage-2 step time: s2lpo's `train_step` against TRL's `GRPOTrainer` on the same work.

Both train the same model (a testbed learner) on the same prompts with the same group
size, batch, lengths, sampler, loss family and optimizer, in one process, alternating
blocks of steps over `--rounds` rounds so that machine noise hits both alike:

    16 prompts × G = 8 = 128 responses of ≤ 48 new tokens per step (temperature 1, top-p 1),
    two AdamW updates of 64 responses each (TRL: per_device_train_batch_size 64,
    steps_per_generation 2, so one s2lpo step = one TRL generation batch = two TRL
    optimizer steps), old log-probs + a KL reference (β = 0.001), ε = 0.2, token-mean
    (TRL loss_type "dapo"), group-normalised advantages, lr 1e-4, grad clip 1.0,
    the same verifier as the reward (in process), torch on `--threads` threads.

s2lpo runs as plain GRPO (`bank: null`) so both do only online work; a second s2lpo
line runs the default S2L-PO configuration (bank at α ≈ 0.5) for reference. Each block's
first step is a warm-up and is not timed. Printed: seconds per step (median over the
timed steps) and the ratio s2lpo / TRL (target ≤ 0.5); s2lpo's step-time breakdown;
and how close s2lpo's training phase (old + reference log-probs, forward + backward,
optimizer) comes to this machine's fp32 matmul peak, measured in the same run.

Model FLOPs: 2·N per real (unpadded) token per forward and 4·N for its backward, N being
the learner's matmul parameters (embedding lookups excluded, the LM head included), plus
causal attention 2·layers·d_attn·len² per sequence per forward (QKᵀ and AV over half the
square); a step's training phase is 2 (old, on the 64 rows of the second update only:
the first update's old log-probs are its own forward) + 2 (reference) + 6 (train) per token.

Usage (TRL lives only in the benchmark's own venv, never in the package's dependencies):
    make bench-env                       # .venv-bench: torch 2.13.0, this package, trl==1.16.0
    .venv-bench/bin/python benchmarks/train_vs_trl.py [--family data/testbed] [--rounds 3]
        [--steps 4] [--threads 2] [--random-init]
`--random-init` re-initialises the learner's weights (same architecture, N(0, 0.02)):
its rollouts stop later (about 40 tokens against 31), the harder case for generation.

Notes from profiling (2 threads, trained testbed learner, 128 responses of ~31 tokens):
- A step was ~0.3 s generation, ~0.35 s old + reference log-probs, ~0.55 s for the two
  updates. In the updates `aten::mm` is ~57% of the time at ~140 GFLOP/s (near this
  CPU's ~180–200 GFLOP/s fp32 peak); the rest is the Qwen3 block's small elementwise ops
  (RMSNorm, rotary, SiLU·up: `aten::mul` alone ~14%). The work is near the hardware, so
  only doing less work moves the step.
- Done: the first update's old log-probs are its own forward, detached (the weights have
  not moved yet), so the no-grad pass covers the second mini-batch only — 25% less work
  in that pass, and bit-identical here (a row's log-probs do not depend on the other rows
  of its micro-batch on this CPU; checked against the previous trainer, weights
  byte-equal). TRL does the same when it is on-policy.
- Done: stage 2 reads 6 of the bank's 12 columns and decodes the next step's row groups
  in the background (benchmarks/explore_engines.py, part 3).
- Measured and not taken: `torch.compile(dynamic=True)` cut a forward+backward from ~190
  to ~173 ms but took 51 s to compile (an 80-step run saves less than that);
  `cache_implementation="static"` made generation slower (428 vs 319 ms); prefilling each
  prompt once and expanding its KV cache ×G cut generation by ~14% (240 → 206 ms) but moves
  the first token's logits by ~1e-5, so banks and runs would no longer repeat bit for bit;
  a KV cache that writes into a preallocated buffer instead of `torch.cat` (same tokens and
  logits, bit for bit) was no faster (245 vs 241 ms: attention copies the strided view);
  dropping the padding mask of right-padded rows changed nothing measurable. Padding is
  small here (rows of 40–43 tokens) and scoring is ~1 ms a step (integer fast path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

PROMPTS, G, MAX_NEW, MINI, LR, BETA = 16, 8, 48, 64, 1.0e-4, 0.001


def matmul_peak(threads: int, size: int = 1024, reps: int = 20) -> float:
    """Best fp32 GFLOP/s of an n×n @ n×n matmul on `threads` threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def model_shape(model) -> tuple[int, int, int]:
    """(matmul parameters, layers, attention width) of a causal LM."""
    import torch

    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.config
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return matmul, cfg.num_hidden_layers, width


def forward_flops(shape: tuple[int, int, int], lengths: list[int]) -> float:
    n, layers, width = shape
    return sum(2 * n * length + 2 * layers * width * length * length for length in lengths)


def s2lpo_run(family: str, out: str, threads: int, *, bank: str | None, random_init: bool):
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig
    from stage2_train.setup_run import setup

    sets = [f"prompts={family}/train.jsonl", f"learner={family}/learner", f"out_dir={out}", "eval.every=0",
            f"prompts_per_step={PROMPTS}", f"group_size={G}", f"max_new_tokens={MAX_NEW}",
            f"mini_batch_size={MINI}", f"micro_batch_size={MINI}", f"lr={LR}", f"loss.kl_coef={BETA}",
            "temperature=1.0", "top_p=1.0", "ppo_epochs=1", f"threads={threads}", "scoring_workers=0",
            "engine=hf", "lora.r=0"]
    sets.append(f"bank={bank or 'null'}")
    cfg = load_stage_config(TrainConfig, "train", params_path="params.yaml", overrides=sets)
    run = setup(cfg, echo=lambda *_: None)
    if random_init:
        _reinit(run.learner.model, seed=0)
        if run.learner.reference is not None:
            run.learner.reference.load_state_dict(run.learner.model.state_dict())
    return run


def _reinit(model, seed: int) -> None:
    """Fresh random weights in place: N(0, initializer_range) matrices, unit norms."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            else:
                p.fill_(1.0 if "norm" in name else 0.0)


def trl_trainer(family: str, out: str, steps: int, seed: int, *, random_init: bool):
    """A GRPOTrainer doing `steps` generation batches (2·steps optimizer steps)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from pipeline.data import load_problems
    from pipeline.models import load_tokenizer
    from pipeline.verifier import score_response

    tok = load_tokenizer(f"{family}/learner")
    problems = load_problems(f"{family}/train.jsonl")
    data = Dataset.from_list([{"prompt": p.question + "=", "answer": p.answer} for p in problems])

    def reward(completions, answer, **_):
        return [score_response(c, a).reward for c, a in zip(completions, answer)]

    model = AutoModelForCausalLM.from_pretrained(f"{family}/learner", dtype=torch.float32)
    if random_init:
        _reinit(model, seed=0)
    args = GRPOConfig(
        output_dir=out, max_steps=2 * steps, per_device_train_batch_size=MINI, steps_per_generation=2,
        num_generations=G, max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0,
        adam_beta1=0.9, adam_beta2=0.999, beta=BETA, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        num_iterations=1, use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=seed, dataloader_num_workers=0, log_completions=False)
    times = TRLTimes()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[times.callback(TrainerCallback)])
    if trainer.ref_model is not None and random_init:
        trainer.ref_model.load_state_dict(model.state_dict())
    return trainer, times


class TRLTimes:
    """Wall time of each TRL generation batch: from the first optimizer step's start to
    the second one's end (generation happens inside the first)."""

    def __init__(self) -> None:
        self.begin: list[float] = []
        self.end: list[float] = []

    def callback(self, base):
        outer = self

        class Times(base):
            def on_step_begin(self, args, state, control, **kw):
                outer.begin.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                outer.end.append(time.perf_counter())

        return Times()

    def per_step(self) -> list[float]:
        return [self.end[i + 1] - self.begin[i] for i in range(0, len(self.end) - 1, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="data/testbed")
    ap.add_argument("--bank", default="data/bank", help="a bank of the family's explorer (the S2L-PO line)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="s2lpo steps (= TRL generation batches) per block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--no-bank", action="store_true", help="skip the S2L-PO (bank) reference line")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    from transformers import PrinterCallback

    from stage2_train.step import train_step

    tmp = tempfile.mkdtemp(prefix="bench-trl-")
    peak = matmul_peak(args.threads)
    runs = {"s2lpo": s2lpo_run(args.family, f"{tmp}/grpo", args.threads, bank=None, random_init=args.random_init)}
    if not args.no_bank:
        runs["s2lpo+bank"] = s2lpo_run(args.family, f"{tmp}/s2lpo", args.threads, bank=args.bank,
                                       random_init=args.random_init)
    shape = model_shape(runs["s2lpo"].learner.model)
    times: dict[str, list[float]] = {"trl": [], **{k: [] for k in runs}}
    parts: dict[str, list[dict]] = {k: [] for k in runs}
    flops: list[tuple[float, float]] = []  # (training-phase FLOPs, training-phase seconds) of s2lpo steps
    lengths: dict[str, list[float]] = {"trl": [], **{k: [] for k in runs}}
    next_step = {k: 1 for k in runs}
    for rnd in range(args.rounds):
        trainer, tt = trl_trainer(args.family, f"{tmp}/trl{rnd}", args.steps + 1, seed=rnd,
                                  random_init=args.random_init)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        times["trl"] += tt.per_step()[1:]
        lengths["trl"] += [r["completions/mean_length"] for r in trainer.state.log_history
                           if "completions/mean_length" in r][1:]
        del trainer
        for name, run in runs.items():
            for k in range(args.steps + 1):
                step = next_step[name] + (20 if name == "s2lpo+bank" else 0)  # α(21) = 0.5 with T_mix 40
                stats = train_step(run, step)
                next_step[name] += 1
                if k == 0:
                    continue
                times[name].append(stats["time/step"])
                parts[name].append({k.removeprefix("time/"): v for k, v in stats.items() if k.startswith("time/")})
                lengths[name].append((stats["tokens/online"] + stats["tokens/bank"]) / (PROMPTS * G))
                if name == "s2lpo":
                    seq = _sequence_lengths(run, stats)
                    fwd = forward_flops(shape, seq)
                    train_s = stats["time/logprobs"] + stats["time/backward"] + stats.get("time/optimizer", 0.0)
                    old_rows = (PROMPTS * G - MINI) / (PROMPTS * G)  # the first update's rows reuse their forward
                    flops.append(((old_rows + 1 + 3) * fwd, train_s))
        print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
            f"{k} {statistics.median(v):.3f} s/step" for k, v in times.items() if v), flush=True)
    _report(args, times, parts, lengths, flops, peak, shape)


def _sequence_lengths(run, stats: dict) -> list[int]:
    """Real (prompt + response) lengths of the step's rows: mean response length × rows
    with the prompts' own lengths (the FLOP count needs only Σlen and Σlen²)."""
    mean_resp = (stats["tokens/online"] + stats["tokens/bank"]) / (PROMPTS * G)
    prompt = statistics.mean(len(p) for p in run.rollouts.prompt_ids[:PROMPTS])
    return [int(round(prompt + mean_resp))] * (PROMPTS * G)


def _report(args, times, parts, lengths, flops, peak, shape) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(times["trl"])
    print()
    print(f"same work per step: {PROMPTS} prompts × G={G}, ≤{MAX_NEW} new tokens, 2 updates of {MINI}, β={BETA}; "
          f"{args.threads} threads; learner {'random-init' if args.random_init else 'trained'} "
          f"({shape[0]:,} matmul parameters); {n} timed steps each over {args.rounds} rounds")
    print(f"  TRL GRPOTrainer     {med['trl']:.3f} s/step   (mean response {statistics.mean(lengths['trl']):.1f} tokens)")
    print(f"  s2lpo (GRPO)        {med['s2lpo']:.3f} s/step   (mean response {statistics.mean(lengths['s2lpo']):.1f} "
          f"tokens)   ratio s2lpo / TRL = {med['s2lpo'] / med['trl']:.2f}   (target ≤ 0.50)")
    if "s2lpo+bank" in med:
        print(f"  s2lpo (S2L-PO α≈.5) {med['s2lpo+bank']:.3f} s/step   ratio / TRL = {med['s2lpo+bank'] / med['trl']:.2f}")
    for name, rows in parts.items():
        keys = [k for k in ("generate", "score", "bank", "logprobs", "backward", "optimizer", "sync") if k in rows[0]]
        total = statistics.mean(r["step"] for r in rows)
        shares = ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f}" for k in keys)
        other = total - sum(statistics.mean(r[k] for r in rows) for k in keys)
        print(f"  {name} breakdown (s, mean): {shares}, other {other:.3f} | step {total:.3f}")
    f = sum(x for x, _ in flops) / len(flops)
    s = statistics.median(t for _, t in flops)
    print(f"training phase (old + ref log-probs, forward+backward, optimizer): {f / 1e9:.2f} GFLOP per step in "
          f"{s:.3f} s = {f / s / 1e9:.1f} GFLOP/s; fp32 matmul peak here {peak:.1f} GFLOP/s "
          f"({100 * f / s / 1e9 / peak:.1f}% of peak; the floor at peak is {f / peak / 1e9:.3f} s)")


if __name__ == "__main__":
    main()
