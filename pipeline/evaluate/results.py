"""The records `s2lpo evaluate` writes: per-problem results (Parquet) and metrics (JSON).

`results.parquet` has one row per (benchmark, problem) with every sample's response,
extracted answer, verdict, token length and finish reason, so any later diagnostic
(pass@k at other k, distinct correct solutions, lengths) is computed from it without
sampling again. `metrics.json` is what `dvc metrics show` reads:

    {"<benchmark>": {"all":    {"pass@1": …, "pass@2": …},
                     "flawed": {…}, "rest": {…},          # when problems carry `flawed`
                     "data_source=aime": {…}, …,          # when they carry 2+ `data_source`s
                     "stats":  {"problems": …, "samples": …, "mean_length": …,
                                "truncated": …, "scoring_timeouts": …}},
     "wall_s": …}

A benchmark file holding several benchmarks (a verl / LUFFY validation parquet, one
`data_source` per benchmark) is scored overall (`all`) and per source
(`data_source=<name>`); `results.parquet` keeps each problem's `data_source`.

For DVC the run also writes the few numbers that matter, `summary.json` — per benchmark
pass@1 overall, on `flawed` and on `rest`, and pass@n at the largest k, in % — which
`dvc metrics show` prints, and `passk.csv` (k, then pass@k in % of every benchmark ×
subset), which `dvc plots` draws; `metrics.json` keeps everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from pipeline.data import Problem

SOURCE_FIELD = "data_source"
SOURCE_SUBSET = "data_source={}"
RESULTS_FILE = "results.parquet"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"  # the few numbers `dvc metrics show` prints
PASSK_FILE = "passk.csv"  # the pass@k curves `dvc plots` draws

RESULTS_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("benchmark", pa.string()),
    ("problem_id", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("flawed", pa.bool_()),  # null when the benchmark has no `flawed` flag
    ("data_source", pa.string()),  # null when the problem has no `data_source`
    ("n", pa.int32()),
    ("correct", pa.int32()),
    ("responses", pa.list_(pa.string())),
    ("extracted", pa.list_(pa.string())),
    ("sample_correct", pa.list_(pa.bool_())),
    ("lengths", pa.list_(pa.int32())),
    ("finish_reasons", pa.list_(pa.string())),
])


@dataclass(frozen=True)
class ProblemResult:
    """The n samples of one problem, scored."""

    problem: Problem
    responses: tuple[str, ...]
    extracted: tuple[Optional[str], ...]
    correct: tuple[bool, ...]
    lengths: tuple[int, ...]
    finish_reasons: tuple[str, ...]
    timeouts: int = 0

    @property
    def n_correct(self) -> int:
        return int(sum(self.correct))


def subset_masks(problems: Sequence[Problem]) -> dict[str, np.ndarray]:
    """`all`, plus `flawed` / `rest` when the problems carry a `flawed` flag, plus one
    `data_source=<name>` per source (in first-seen order) when they carry two or more."""
    masks = {"all": np.ones(len(problems), dtype=bool)}
    if any("flawed" in p.meta for p in problems):
        flawed = np.array([bool(p.meta.get("flawed", False)) for p in problems], dtype=bool)
        masks.update(flawed=flawed, rest=~flawed)
    sources = [_source(p) for p in problems]
    names = list(dict.fromkeys(s for s in sources if s is not None))
    if len(names) > 1:
        for name in names:
            masks[SOURCE_SUBSET.format(name)] = np.array([s == name for s in sources], dtype=bool)
    return masks


def _source(problem: Problem) -> Optional[str]:
    """The problem's `data_source` as text, None without one."""
    value = problem.meta.get(SOURCE_FIELD)
    return None if value is None or value == "" else str(value)


def results_table(model: str, benchmark: str, results: Sequence[ProblemResult]) -> pa.Table:
    """One benchmark's results as rows of `RESULTS_SCHEMA`."""
    has_flag = any("flawed" in r.problem.meta for r in results)
    columns = {
        "model": [model] * len(results),
        "benchmark": [benchmark] * len(results),
        "problem_id": [r.problem.id for r in results],
        "question": [r.problem.question for r in results],
        "answer": [r.problem.answer for r in results],
        "flawed": [bool(r.problem.meta.get("flawed", False)) if has_flag else None for r in results],
        "data_source": [_source(r.problem) for r in results],
        "n": [len(r.responses) for r in results],
        "correct": [r.n_correct for r in results],
        "responses": [list(r.responses) for r in results],
        "extracted": [list(r.extracted) for r in results],
        "sample_correct": [list(r.correct) for r in results],
        "lengths": [list(r.lengths) for r in results],
        "finish_reasons": [list(r.finish_reasons) for r in results],
    }
    return pa.table(columns, schema=RESULTS_SCHEMA)


def benchmark_metrics(results: Sequence[ProblemResult], ks: Sequence[int]) -> dict:
    """pass@k by subset and the sample statistics of one benchmark."""
    from pipeline.sample_score import passk_by_subset

    n = len(results[0].responses)
    counts = np.array([r.n_correct for r in results])
    table = passk_by_subset(counts, n, subset_masks([r.problem for r in results]), ks)
    out: dict = {subset: {f"pass@{k}": round(v, 6) for k, v in by_k.items()} for subset, by_k in table.items()}
    lengths = [x for r in results for x in r.lengths]
    reasons = [x for r in results for x in r.finish_reasons]
    out["stats"] = {"problems": len(results), "samples": n, "mean_length": round(float(np.mean(lengths)), 3),
                    "truncated": round(reasons.count("length") / len(reasons), 6),
                    "scoring_timeouts": int(sum(r.timeouts for r in results))}
    return out


def format_metrics(metrics: dict) -> str:
    """pass@k (%) as an aligned table: one row per benchmark × subset."""
    rows = []
    for bench, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        for subset, by_k in entry.items():
            if subset != "stats":
                rows.append((bench, subset, by_k))
    ks = list(rows[0][2])
    width = max(7, *(len(s) for _, s, _ in rows))
    head = f"{'benchmark':<12} {'subset':<{width}} " + " ".join(f"{k.removeprefix('pass'):>6}" for k in ks)
    lines = [head, "-" * len(head)]
    lines += [f"{b:<12} {s:<{width}} " + " ".join(f"{100 * t[k]:6.1f}" for k in ks) for b, s, t in rows]
    return "\n".join(lines)


def summary_metrics(metrics: dict) -> dict:
    """`summary.json`: per benchmark {"pass@1", "flawed", "rest", "pass@<largest k>"} in %."""
    out = {}
    for bench, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        top = list(entry["all"])[-1]
        row = {"pass@1": entry["all"].get("pass@1")}
        row.update({subset: entry[subset].get("pass@1") for subset in ("flawed", "rest") if subset in entry})
        row[top] = entry["all"][top]
        out[bench] = {k: round(100 * v, 1) for k, v in row.items() if v is not None}
    return out


def passk_csv(metrics: dict) -> str:
    """`passk.csv`: one row per k; a column per benchmark (all problems) and per benchmark
    subset (`BENCH_flawed`, `BENCH_rest`), pass@k in %."""
    columns: dict[str, dict[str, float]] = {}
    for bench, entry in metrics.items():
        if isinstance(entry, dict):
            for subset, by_k in entry.items():
                if subset != "stats":
                    columns[bench if subset == "all" else f"{bench}_{subset}"] = by_k
    ks = sorted({int(k.removeprefix("pass@")) for by_k in columns.values() for k in by_k})
    rows = ["k," + ",".join(columns)]
    rows += [f"{k}," + ",".join(f"{100 * c[f'pass@{k}']:.2f}" if f"pass@{k}" in c else "" for c in columns.values())
             for k in ks]
    return "\n".join(rows) + "\n"
