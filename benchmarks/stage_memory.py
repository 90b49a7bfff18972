"""Peak memory (RSS) of each pipeline stage, each run as its own CLI command.

Every stage runs as `s2lpo …` in a subprocess with its params.yaml settings, reading the
default pipeline's artifacts (`data/testbed`, `data/bank`) and writing into a temporary
directory. Where a stage's memory does not grow with its length, it is shortened (said
in the table): the SFT steps of `prepare`, the prompts of `explore` (two full shards of
512 prompts × 16 samples, so the background writer holds a shard while the next one
generates), the steps of `train` (two, with an evaluation after each).

The process tree (the command and whatever it spawns: scoring workers, vLLM's engine
core) is sampled every 50 ms; printed are the peak of the tree's summed RSS, the
command's own peak (`ru_maxrss` from wait4, exact) and the wall time.

Usage:  python benchmarks/stage_memory.py [--family data/testbed] [--bank data/bank] [--only train ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def stages(family: str, bank: str, tmp: str) -> list[tuple[str, str, list[str]]]:
    """(name, what was shortened, argv)."""
    s2lpo = [sys.executable, "-m", "pipeline.cli"]
    learner = f"{family}/learner"
    return [
        ("prepare", "sft_steps 100 + 100 (default 1500 + 2400)",
         s2lpo + ["prepare", "--set", f"out_dir={tmp}/testbed", "--set", "explorer.sft_steps=100",
                  "--set", "learner.sft_steps=100"]),
        ("explore", "1024 prompts (default 4096)",
         s2lpo + ["explore", "--set", f"prompts={family}/train.jsonl", "--set",
                  f"explorer={family}/explorer", "--set", f"bank={tmp}/bank", "--set", "limit=1024"]),
        ("train", "2 steps, eval after each (default 80, eval every 10)",
         s2lpo + ["train", "--no-progress", "--set", f"prompts={family}/train.jsonl", "--set", f"learner={learner}",
                  "--set", f"bank={bank}", "--set", f"out_dir={tmp}/train", "--set", "steps=2", "--set",
                  "eval.every=1", "--set", f"eval.problems={family}/test.jsonl"]),
        ("evaluate", "none (256 problems × 64 samples)",
         s2lpo + ["evaluate", "--no-progress", "--set", f"model={learner}", "--set", f"out_dir={tmp}/eval", "--set",
                  f"benchmarks.testbed={family}/test.jsonl"]),
    ]


def measure(argv: list[str]) -> tuple[int, float, float, int, str]:
    """(exit status, tree peak MiB, own peak MiB, seconds, last stderr line)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(_rss(p) for p in tree))
            except psutil.NoSuchProcess:
                pass
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return os.waitstatus_to_exitcode(status), peak[0] / 2**20, usage.ru_maxrss / 1024, seconds, last


def _rss(p) -> int:
    import psutil

    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="data/testbed")
    ap.add_argument("--bank", default="data/bank")
    ap.add_argument("--only", nargs="*", help="stage names to run (default: all)")
    args = ap.parse_args()
    for path in (f"{args.family}/learner", f"{args.family}/explorer", args.bank):
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found; build the default pipeline first (make run, or s2lpo prepare && "
                     "s2lpo explore) or pass --family/--bank")
    tmp = tempfile.mkdtemp(prefix="bench-mem-")
    rows = []
    try:
        for name, shortened, argv in stages(args.family, args.bank, tmp):
            if args.only and name not in args.only:
                continue
            code, tree, own, seconds, last = measure(argv)
            if code != 0:
                sys.exit(f"error: stage {name} exited {code}: {last}")
            rows.append((name, tree, own, seconds, shortened))
            print(f"{name:9s} peak RSS {tree:7.0f} MiB (process tree, sampled)  {own:7.0f} MiB (main process, exact)  "
                  f"{seconds:6.1f} s   shortened: {shortened}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
