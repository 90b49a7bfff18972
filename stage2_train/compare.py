"""Conclusions across families: one study run on several independently built testbed
families (other prepare and member seeds), compared arm by arm against the baseline.

A family is one study's `out_root` (ARM/seedN/ runs). For every arm and metric:

- over runs: the mean over every (family, seed) run with its 95% Student-t interval
  (df = runs − 1), and each family's own mean;
- paired against the baseline: d = arm − baseline for each (family, seed) both ran (the
  same family, seed, initial weights and evaluation sampling seed, so their shared noise
  cancels); the mean of d with its 95% t interval, the exact two-sided p of the paired
  sign-flip (randomisation) test — the share of the 2ⁿ sign assignments of d whose
  |mean| is at least the observed one, no normality assumed — and each family's mean d.
  A conclusion "holds across families" only when every family's mean d has its sign.

The intervals treat the runs as independent; seeds of one family share that family, so
the per-family columns are what to read before trusting a pooled interval.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from stage2_train.metrics import read_jsonl

# (label, metrics.jsonl key, step: None = the final evaluation)
METRICS = (("flawed pass@1", "eval/flawed/pass@1", None), ("flawed pass@1 @20", "eval/flawed/pass@1", 20),
           ("pass@1", "eval/pass@1", None), ("rest pass@1", "eval/rest/pass@1", None))

# two-sided 95% quantiles of Student's t by degrees of freedom (the normal's 1.960 beyond 30)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
        21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def t_interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval: t₀.₉₇₅(n−1) · s / √n, s with ddof 1); the
    half-width is nan for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    t = T975.get(len(x) - 1, 1.960)
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


def sign_flip_p(diffs) -> float:
    """Exact two-sided p of the paired sign-flip test of mean(diffs) = 0: the share of the
    2ⁿ sign assignments whose |mean| ≥ the observed |mean| (n ≤ 20; 1.0 for all-zero)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return math.nan
    if len(d) > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n assignments; n = {len(d)} > 20")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean(np.abs(signs @ d) / len(d) >= observed - 1e-12))


def load_family(root: str | Path) -> dict[str, dict[int, list[dict]]]:
    """{arm: {seed: metrics records}} of a study's finished runs (summary.json written)."""
    out: dict[str, dict[int, list[dict]]] = {}
    for summary in sorted(Path(root).glob("*/seed*/summary.json")):
        seed = int(summary.parent.name.removeprefix("seed"))
        out.setdefault(summary.parent.parent.name, {})[seed] = read_jsonl(summary.parent / "metrics.jsonl")
    return out


def metric_value(records: list[dict], key: str, step: int | None) -> float | None:
    """`key` at the final evaluation (step None) or at evaluated step `step`."""
    evaluated = [r for r in records if r.get(key) is not None]
    if step is None:
        return float(evaluated[-1][key]) if evaluated else None
    hit = [r for r in evaluated if r["step"] == step]
    return float(hit[0][key]) if hit else None


@dataclass(frozen=True)
class Cell:
    """One arm × metric across families (values in the metric's own unit, a fraction);
    `pair_diffs` holds each family's arm − baseline differences, one per paired seed."""

    runs: int
    mean: float
    ci: float
    family_means: dict[str, float]
    pairs: int = 0
    diff: float = math.nan
    diff_ci: float = math.nan
    p: float = math.nan
    pair_diffs: dict[str, list[float]] | None = None

    @property
    def family_diffs(self) -> dict[str, float] | None:
        """Each family's mean paired difference."""
        return None if self.pair_diffs is None else {f: float(np.mean(d)) for f, d in self.pair_diffs.items()}

    @property
    def holds(self) -> str:
        """'yes' when every family's mean paired difference has one sign, 'flips' when two
        families disagree, '–' when unpaired or a family's difference is exactly zero."""
        if not self.pair_diffs or self.pairs == 0:
            return "–"
        signs = {int(np.sign(v)) for v in self.family_diffs.values()}
        return "flips" if {1, -1} <= signs else "yes" if signs in ({1}, {-1}) else "–"


def _values(runs: dict[int, list[dict]], key: str, step: int | None) -> dict[int, float]:
    """{seed: the metric} of one arm's runs in one family (runs that lack it left out)."""
    return {s: v for s, r in runs.items() if (v := metric_value(r, key, step)) is not None}


def compare(families: dict[str, dict[str, dict[int, list[dict]]]], *, baseline: str = "grpo",
            metrics=METRICS) -> dict[str, dict[str, Cell]]:
    """{arm: {metric label: Cell}} over `families` ({name: load_family(root)})."""
    missing = [f for f, arms in families.items() if baseline not in arms]
    if missing:
        raise UserError(f"families {missing} have no finished {baseline!r} runs to pair against; run the baseline "
                        "arm there or pick another --baseline")
    arms = list(dict.fromkeys(a for fam in families.values() for a in fam))
    out: dict[str, dict[str, Cell]] = {arm: {} for arm in arms}
    for label, key, step in metrics:
        base = {fam: _values(runs[baseline], key, step) for fam, runs in families.items()}
        for arm in arms:
            mine = {fam: v for fam, runs in families.items() if (v := _values(runs.get(arm, {}), key, step))}
            if not mine:
                continue
            mean, ci = t_interval([v for vals in mine.values() for v in vals.values()])
            by_family = {fam: float(np.mean(list(vals.values()))) for fam, vals in mine.items()}
            pair_diffs = {fam: d for fam, vals in mine.items()
                          if (d := [vals[s] - base[fam][s] for s in sorted(vals) if s in base[fam]])}
            diffs = [d for ds in pair_diffs.values() for d in ds]
            if arm == baseline or not diffs:
                out[arm][label] = Cell(sum(map(len, mine.values())), mean, ci, by_family)
                continue
            dm, dci = t_interval(diffs)
            out[arm][label] = Cell(sum(map(len, mine.values())), mean, ci, by_family, len(diffs), dm, dci,
                                   sign_flip_p(diffs), pair_diffs)
    return out


def _pts(v: float, signed: bool = False) -> str:
    if v is None or math.isnan(v):
        return "–"
    v = round(100 * v, 1) + 0.0  # no "-0.0"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def format_tables(result: dict[str, dict[str, Cell]], families: list[str], *, baseline: str = "grpo") -> str:
    """Two Markdown tables: each arm's value over runs, and its paired difference against the baseline."""
    labels = list(dict.fromkeys(label for cells in result.values() for label in cells))
    head = " | ".join(f"{lab} (95% CI)" for lab in labels)
    lines = [f"| arm | runs | {head} |", "|---|---|" + "---|" * len(labels)]
    for arm, cells in result.items():
        runs = max((c.runs for c in cells.values()), default=0)
        row = [f"{_pts(c.mean)} ± {_pts(c.ci)} ({' / '.join(_pts(c.family_means.get(f)) for f in families)})"
               if (c := cells.get(lab)) else "–" for lab in labels]
        lines.append(f"| {arm} | {runs} | " + " | ".join(row) + " |")
    fams = " | ".join(families)
    lines += ["", f"| arm − {baseline} | metric | pairs | mean difference (95% CI), pts | sign-flip p | {fams} | "
                  "holds in every family |",
              "|---|---|---|---|---|" + "---|" * len(families) + "---|"]
    for arm, cells in result.items():
        for lab, c in cells.items():
            if c.pairs == 0:
                continue
            per = " | ".join(_pts((c.family_diffs or {}).get(f), True) for f in families)
            lines.append(f"| {arm} | {lab} | {c.pairs} | {_pts(c.diff, True)} ± {_pts(c.diff_ci)} | {c.p:.3f} | "
                         f"{per} | {c.holds} |")
    return "\n".join(lines)


def plot(result: dict[str, dict[str, Cell]], families: dict, path: Path, *, baseline: str,
         metrics=METRICS) -> None:
    """One panel per metric: each arm's paired differences against the baseline, a dot per
    (family, seed) coloured by family, and the mean with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in result if a != baseline]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.5 * len(arms) + 1.8), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, _, _) in zip(np.atleast_1d(axes), metrics):
        for y, arm in enumerate(arms):
            c = result[arm].get(label)
            if c is None or not c.pairs:
                continue
            for f, fam in enumerate(families):
                d = [100 * v for v in c.pair_diffs.get(fam, [])]
                ax.scatter(d, [y + 0.12 * (f - 1)] * len(d), s=14, color=colours[f % len(colours)],
                           label=fam if y == 0 else None, zorder=3)
            ax.errorbar([100 * c.diff], [y], xerr=[[100 * c.diff_ci if not math.isnan(c.diff_ci) else 0]],
                        fmt="k|", markersize=12, capsize=3, zorder=4)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{label}: arm − {baseline}")
        ax.set_xlabel("points")
    axes_list = np.atleast_1d(axes)
    axes_list[0].set_yticks(range(len(arms)), arms)
    axes_list[0].invert_yaxis()
    axes_list[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json(value):
    """NaN (an interval of one value) as null: compare.json stays standard JSON."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def write_comparison(roots: list[str | Path], *, baseline: str = "grpo", out_dir: str | Path) -> str:
    """compare.md, compare.json and compare.png in `out_dir` for the studies at `roots`."""
    families = {}
    for root in roots:
        fam = load_family(root)
        if not fam:
            raise UserError(f"{root}: no finished runs (*/seed*/summary.json); run `s2lpo study run` for it first")
        families[Path(root).name] = fam
    result = compare(families, baseline=baseline)
    text = format_tables(result, list(families), baseline=baseline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, families, out / "compare.png", baseline=baseline)
    record = {arm: {lab: _json({**vars(c), "family_diffs": c.family_diffs, "holds": c.holds})
                    for lab, c in cells.items()}
              for arm, cells in result.items()}
    (out / "compare.json").write_text(json.dumps({"families": list(families), "baseline": baseline, "arms": record},
                                                 indent=1) + "\n")
    note = ("Values in %: mean ± 95% t half-width over all (family, seed) runs, then each family's mean "
            f"({' / '.join(families)}). Paired differences: arm − {baseline} on the same family and seed; "
            "p of the exact two-sided sign-flip test.")
    (out / "compare.md").write_text(f"# Across families: {', '.join(families)}\n\n{note}\n\n{text}\n\n"
                                    "![paired differences](compare.png)\n")
    return text
