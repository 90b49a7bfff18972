"""`s2lpo diversity`: several models' evaluate results side by side.

Reads the `results.parquet` of each `s2lpo evaluate` run (no model is loaded), and for
every benchmark and subset computes each model's pass@k curve, where the curves cross
(`diversity.crossings`) and the distinct correct solutions per problem. Writes, each
atomically, into `out_dir`:

    diversity.json        curves, crossings and distinct-correct summaries
    distinct/LABEL.json   what `dvc metrics show` prints, one file per model: per benchmark
                          the mean distinct correct solutions per problem (all problems)
    passk_curves.csv      benchmark, subset, model, k, pass_at_k
    distinct_correct.csv  benchmark, model, problem_id, flawed, n, correct, counted, distinct_correct
                          (counted: correct samples that count under the `Counting`)
    diversity.png         pass@k curves (one panel per benchmark × subset) and mean distinct
                          correct solutions per problem
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.errors import UserError
from pipeline.evaluate.diversity import Counting, counted, crossings, distinct_correct_counts, summarize_distinct
from pipeline.evaluate.results import CONFIG_FILE, RESULTS_FILE

SUBSET_ORDER = ("all", "flawed", "rest")


def parse_run(arg: str) -> tuple[str, Path]:
    """`LABEL=DIR` or `DIR` (the label is then the run's recorded label, else DIR's name)."""
    import json

    label, sep, path = arg.partition("=")
    run_dir = Path(path if sep else arg)
    if not (run_dir / RESULTS_FILE).is_file():
        raise UserError(f"{run_dir}: no {RESULTS_FILE}; give the out_dir of an `s2lpo evaluate` run")
    if not sep:
        config = run_dir / CONFIG_FILE
        label = json.loads(config.read_text()).get("label", run_dir.name) if config.is_file() else run_dir.name
    return label, run_dir


def load_runs(runs: Sequence[tuple[str, Path]], *, counting: Counting = Counting.ANSWER) -> dict[str, dict[str, dict]]:
    """label → benchmark → columns (problem_id, flawed, n, correct, counted, distinct); `counted`
    and `distinct` are the samples that count under `counting` and their distinct texts."""
    import pyarrow.parquet as pq

    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        raise UserError(f"two runs share a label ({labels}); name them LABEL=DIR")
    out: dict[str, dict[str, dict]] = {}
    for label, run_dir in runs:
        table = pq.read_table(run_dir / RESULTS_FILE).to_pydict()
        out[label] = {}
        for bench in dict.fromkeys(table["benchmark"]):
            rows = [i for i, b in enumerate(table["benchmark"]) if b == bench]
            col = {name: [table[name][i] for i in rows] for name in ("problem_id", "flawed", "n", "correct")}
            responses = [table["responses"][i] for i in rows]
            ok = counted([table["question"][i] for i in rows], responses, [table["sample_correct"][i] for i in rows],
                         counting)
            col["counted"] = [sum(o) for o in ok]
            col["distinct"] = distinct_correct_counts(responses, ok).tolist()
            out[label][bench] = col
    return out


def _masks(col: dict) -> dict[str, np.ndarray]:
    flawed = col["flawed"]
    masks = {"all": np.ones(len(flawed), dtype=bool)}
    if any(f is not None for f in flawed):
        arr = np.array([bool(f) for f in flawed])
        masks.update(flawed=arr, rest=~arr)
    return {k: m for k, m in masks.items() if m.any()}


def diversity_report(data: dict[str, dict[str, dict]], *, counting: Counting = Counting.ANSWER) -> dict:
    """Curves (from the verifier's verdicts), crossings and distinct-solution summaries
    (under `counting`) by benchmark and subset."""
    from pipeline.sample_score import powers_of_two
    from pipeline.passk import mean_pass_at_k

    report: dict = {"models": list(data), "counting": counting.value, "benchmarks": {}}
    benchmarks = list(dict.fromkeys(b for per_model in data.values() for b in per_model))
    for bench in benchmarks:
        entry: dict = {"curves": {}, "crossings": {}, "distinct_correct": {}}
        for label, per_model in data.items():
            if bench not in per_model:
                continue
            col = per_model[bench]
            n, c, k, d = (np.array(col[key]) for key in ("n", "correct", "counted", "distinct"))
            for subset, mask in _masks(col).items():
                curve = mean_pass_at_k(n[mask], c[mask], powers_of_two(int(n[mask].min())))
                entry["curves"].setdefault(subset, {})[label] = {str(k): round(v, 6) for k, v in curve.items()}
                summary = summarize_distinct(d[mask], k[mask])
                entry["distinct_correct"].setdefault(subset, {})[label] = vars(summary)
        for subset, curves in entry["curves"].items():
            as_int = {label: {int(k): v for k, v in curve.items()} for label, curve in curves.items()}
            entry["crossings"][subset] = [vars(x) for x in crossings(as_int)]
        report["benchmarks"][bench] = entry
    return report


def format_report(report: dict) -> str:
    lines = []
    for bench, entry in report["benchmarks"].items():
        for subset, curves in entry["curves"].items():
            ks = max((list(c) for c in curves.values()), key=len)
            lines.append(f"{bench} / {subset}: pass@k (%) and distinct correct solutions per problem "
                         f"(counting: {report['counting']})")
            lines.append(f"  {'model':<16}" + "".join(f"{'@' + k:>7}" for k in ks) + "  distinct  (solved)")
            for label, curve in curves.items():
                dist = entry["distinct_correct"][subset][label]
                solved = "-" if dist["mean_solved"] is None else f"{dist['mean_solved']:.2f}"
                cells = "".join(f"{100 * curve[k]:7.1f}" if k in curve else f"{'':>7}" for k in ks)
                lines.append(f"  {label:<16}{cells}  {dist['mean']:8.2f}  ({solved})")
            for x in entry["crossings"][subset]:
                where = f"at k = {x['k']}" if x["k"] is not None else "not within the ks"
                lines.append(f"  {x['lower']} (lower pass@1) reaches {x['higher']}: {where}")
    return "\n".join(lines)


def summary_metrics(report: dict) -> dict:
    """{model: {benchmark: {"distinct": mean distinct correct solutions per problem}}} (all
    problems): one file per model, so `dvc metrics show` prints one `BENCH.distinct` column."""
    out: dict = {}
    for bench, entry in report["benchmarks"].items():
        for label, d in entry["distinct_correct"].get("all", {}).items():
            out.setdefault(label, {})[bench] = {"distinct": round(d["mean"], 2)}
    return out


def write_report(runs: Sequence[tuple[str, Path]], out_dir: str, *, counting: Counting = Counting.ANSWER) -> dict:
    """Load the runs, compute the report and write the four files into `out_dir`."""
    import json

    from pipeline.fs import atomic_write, resolve

    data = load_runs(runs, counting=counting)
    report = diversity_report(data, counting=counting)
    loc = resolve(out_dir)
    payload = (json.dumps(report, indent=2) + "\n").encode()
    atomic_write(loc, "diversity.json", lambda s: s.write(payload))
    for label, per_bench in summary_metrics(report).items():
        payload_l = (json.dumps(per_bench, indent=2) + "\n").encode()
        atomic_write(loc, f"distinct/{label}.json", lambda s, p=payload_l: s.write(p))
    atomic_write(loc, "passk_curves.csv", lambda s: s.write(_curves_csv(report)))
    atomic_write(loc, "distinct_correct.csv", lambda s: s.write(_distinct_csv(data)))
    png = plot_report(report)
    atomic_write(loc, "diversity.png", lambda s: s.write(png))
    return report


def _csv_bytes(header: list[str], rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _curves_csv(report: dict) -> bytes:
    rows = [(bench, subset, label, k, v) for bench, entry in report["benchmarks"].items()
            for subset, curves in entry["curves"].items() for label, curve in curves.items() for k, v in curve.items()]
    return _csv_bytes(["benchmark", "subset", "model", "k", "pass_at_k"], rows)


def _distinct_csv(data: dict) -> bytes:
    keys = ("problem_id", "flawed", "n", "correct", "counted", "distinct")
    rows = [(bench, label, *("" if v is None else v for v in values)) for label, per_model in data.items()
            for bench, col in per_model.items() for values in zip(*(col[k] for k in keys))]
    return _csv_bytes(["benchmark", "model", "problem_id", "flawed", "n", "correct", "counted", "distinct_correct"],
                      rows)


def plot_report(report: dict) -> bytes:
    """PNG bytes: per benchmark one row of pass@k panels (by subset) and a bar panel of
    the mean distinct correct solutions per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(report["benchmarks"])
    cols = 1 + max(len(e["curves"]) for e in report["benchmarks"].values())
    fig, axes = plt.subplots(len(benches), cols, figsize=(3.8 * cols, 3.3 * len(benches)), squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(report["models"])}
    for row, bench in zip(axes, benches):
        entry = report["benchmarks"][bench]
        subsets = [s for s in SUBSET_ORDER if s in entry["curves"]]
        for ax, subset in zip(row, subsets):
            for label, curve in entry["curves"][subset].items():
                ax.plot([int(k) for k in curve], [100 * v for v in curve.values()], "o-", ms=3, color=colors[label],
                        label=label)
            ax.set_xscale("log", base=2)
            ax.set(title=f"{bench}: {subset}", xlabel="k", ylabel="pass@k (%)", ylim=(0, 102))
            ax.grid(alpha=0.3)
        row[0].legend(loc="lower right", fontsize=8)
        _distinct_bars(row[-1], entry, subsets, colors)
        for ax in row[len(subsets) : cols - 1]:
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _distinct_bars(ax, entry: dict, subsets: list[str], colors: dict) -> None:
    labels = list(entry["distinct_correct"]["all"])
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        values = [entry["distinct_correct"][s].get(label, {}).get("mean", 0.0) for s in subsets]
        ax.bar(np.arange(len(subsets)) + i * width, values, width, color=colors[label], label=label)
    ax.set_xticks(np.arange(len(subsets)) + width * (len(labels) - 1) / 2, subsets)
    ax.set(title="distinct correct solutions", ylabel="mean per problem")
    ax.grid(alpha=0.3, axis="y")
