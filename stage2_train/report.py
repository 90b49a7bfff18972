"""The study report: per arm, pass@1 curves (overall, flawed, rest) over steps and over
online rollout tokens, final values as mean ± std over seeds, and the comparisons the
issue asks for against the baseline arm (plain GRPO):

- steps_to_baseline_final: first evaluated step at which the arm's mean flawed-subset
  pass@1 reaches the baseline's final mean (None if never);
- worst_rest_gap: the most the arm's mean rest-subset pass@1 (all problems when none is
  flagged) falls below the baseline's mean curve at any evaluated step (points; negative
  = below);
- token_ratio: the arm's online tokens over the baseline's at the last step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stage2_train.metrics import read_jsonl

MILESTONES = (10, 20, 40)  # steps at which the table also shows the flawed-subset pass@1
CURVES = [("eval/pass@1", "all problems"), ("eval/flawed/pass@1", "flawed subset"), ("eval/rest/pass@1", "rest")]


def load_arms(root: str | Path) -> dict[str, list[list[dict]]]:
    """{arm: [records of each finished seed]}."""
    arms: dict[str, list[list[dict]]] = {}
    for summary in sorted(Path(root).glob("*/seed*/summary.json")):
        arms.setdefault(summary.parent.parent.name, []).append(read_jsonl(summary.parent / "metrics.jsonl"))
    return arms


def curve(runs: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std, mean online tokens) over the steps every run evaluated."""
    per_run = [{r["step"]: (r[key], r.get("online_tokens", 0)) for r in recs if r.get(key) is not None} for recs in runs]
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    vals = np.array([[p[s][0] for s in steps] for p in per_run])
    toks = np.array([[p[s][1] for s in steps] for p in per_run])
    return np.array(steps), vals.mean(0), vals.std(0), toks.mean(0)


def max_k(runs: list[list[dict]]) -> int | None:
    """The largest k whose overall pass@k every run's last record holds (the eval's n)."""
    ks = [{int(k.removeprefix("eval/pass@")) for k in recs[-1] if k.startswith("eval/pass@")} for recs in runs]
    common = set.intersection(*ks) if ks else set()
    return max(common) if common else None


def summarise(arms: dict, baseline: str = "grpo") -> dict:
    out = {}
    base = arms.get(baseline)
    for arm, runs in arms.items():
        row = {"seeds": len(runs)}
        top_k = max_k(runs)
        if top_k:
            row["top_k"] = top_k
        for key, _ in CURVES + ([(f"eval/pass@{top_k}", "")] if top_k else []):
            finals = [recs[-1].get(key) for recs in runs if recs[-1].get(key) is not None]
            if finals:
                row[key] = (float(np.mean(finals)), float(np.std(finals)))
        steps, flaw, _, _ = curve(runs, "eval/flawed/pass@1")
        for m in MILESTONES:
            if m in steps.tolist():
                row[f"flawed@{m}"] = float(flaw[steps.tolist().index(m)])
        row["online_tokens"] = float(np.mean([recs[-1].get("online_tokens", 0) for recs in runs]))
        row["seconds_per_step"] = float(np.mean([np.mean([r["time/step"] for r in recs if "time/step" in r])
                                                 for recs in runs]))
        if base:
            row.update(_against(runs, base))
        out[arm] = row
    return out


def _against(runs, base) -> dict:
    res = {}
    bs, bflaw, _, _ = curve(base, "eval/flawed/pass@1")
    s, flaw, _, _ = curve(runs, "eval/flawed/pass@1")
    if len(bs) and len(s):
        hit = [int(st) for st, v in zip(s, flaw) if v >= bflaw[-1]]
        res["steps_to_baseline_final"] = hit[0] if hit else None
        res["baseline_final_steps"] = int(bs[-1])
    # the rest subset when problems carry a flaw flag; all problems otherwise (a clean family)
    rest_key = "eval/rest/pass@1" if any("eval/rest/pass@1" in r for recs in base for r in recs) else "eval/pass@1"
    bs, brest, _, _ = curve(base, rest_key)
    s, rest, _, _ = curve(runs, rest_key)
    common = sorted(set(bs.tolist()) & set(s.tolist()))
    if common:
        gaps = [rest[list(s).index(c)] - brest[list(bs).index(c)] for c in common]
        res["worst_rest_gap"] = float(min(gaps)) * 100
    btok = np.mean([recs[-1].get("online_tokens", 0) for recs in base])
    res["token_ratio"] = float(np.mean([recs[-1].get("online_tokens", 0) for recs in runs]) / btok) if btok else None
    return res


def format_table(summary: dict) -> str:
    def pm(v):
        return f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}" if v else "–"

    milestones = [m for m in MILESTONES if any(f"flawed@{m}" in r for r in summary.values())]  # the evaluated ones
    marks = "".join(f" flawed @{m} |" for m in milestones)
    ks = {r["top_k"] for r in summary.values() if "top_k" in r}
    top = f"pass@{ks.pop()}" if len(ks) == 1 else "pass@k (max k)"
    lines = [f"| arm | seeds | pass@1 | flawed pass@1 | rest pass@1 | {top} |{marks} steps to GRPO's final flawed | "
             "worst rest gap vs GRPO (pts) | online tokens / GRPO | s/step |",
             "|---|---|---|---|---|---|" + "---|" * len(milestones) + "---|---|---|---|"]
    for arm, r in summary.items():
        gap = r.get("worst_rest_gap")
        ratio = r.get("token_ratio")
        lines.append(f"| {arm} | {r['seeds']} | {pm(r.get('eval/pass@1'))} | {pm(r.get('eval/flawed/pass@1'))} | "
                     f"{pm(r.get('eval/rest/pass@1'))} | {pm(r.get('eval/pass@' + str(r.get('top_k'))))} | "
                     + "".join(f"{_pct(r.get(f'flawed@{m}'))} | " for m in milestones) +
                     f"{_steps(r)} | "
                     f"{'–' if gap is None else f'{gap:+.1f}'} | {'–' if ratio is None else f'{ratio:.2f}'} | "
                     f"{r['seconds_per_step']:.2f} |")
    return "\n".join(lines) + ("\n\nAll values are the final evaluation (mean ± std over seeds, %) except "
                                "`flawed @N` (mean at step N).")


def _steps(r: dict) -> str:
    if "baseline_final_steps" not in r:
        return "–"
    hit = r.get("steps_to_baseline_final")
    return f"{'never' if hit is None else hit} (of {r['baseline_final_steps']})"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def plot(arms: dict, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey="col")
    for col, (key, label) in enumerate(CURVES):
        for arm, runs in arms.items():
            steps, mean, std, toks = curve(runs, key)
            if not len(steps):
                continue
            for row, x in enumerate((steps, toks / 1e3)):
                line, = axes[row, col].plot(x, 100 * mean, label=arm)
                axes[row, col].fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.15,
                                            color=line.get_color())
        axes[0, col].set_title(f"pass@1, {label}")
        axes[0, col].set_xlabel("step")
        axes[1, col].set_xlabel("online rollout tokens (thousands)")
        axes[0, col].set_ylabel("%")
        axes[1, col].set_ylabel("%")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or "mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# the curves of the DVC plots: column of curves/ARM.csv → metrics.jsonl key (mean over seeds, %)
CURVE_COLUMNS = {"pass1": "eval/pass@1", "flawed_pass1": "eval/flawed/pass@1", "rest_pass1": "eval/rest/pass@1"}


def curve_table(runs: list[list[dict]]) -> str:
    """CSV of one arm's curves for `dvc plots`: step, online rollout tokens (thousands) and
    pass@1 (%, mean over seeds) overall, on the flawed subset and on the rest, at every
    step all seeds evaluated. A subset the problems lack is left out."""
    steps, _, _, toks = curve(runs, "eval/pass@1")
    columns = {"step": steps.tolist(), "online_ktokens": [round(t / 1e3, 3) for t in toks]}
    for name, key in CURVE_COLUMNS.items():
        s, mean, _, _ = curve(runs, key)
        if len(s) and s.tolist() == columns["step"]:
            columns[name] = [round(100 * v, 2) for v in mean]
    rows = [",".join(columns)] + [",".join(str(col[i]) for col in columns.values()) for i in range(len(steps))]
    return "\n".join(rows) + "\n"


def arm_metrics(row: dict) -> dict:
    """The few numbers of one arm that `dvc metrics show` prints (final evaluation, mean over
    seeds, %): pass@1 overall / flawed / rest, pass@k at the eval's largest k, and online
    rollout tokens relative to the baseline arm."""
    out = {}
    for name, key in (("pass@1", "eval/pass@1"), ("flawed", "eval/flawed/pass@1"), ("rest", "eval/rest/pass@1"),
                      (f"pass@{row.get('top_k')}", f"eval/pass@{row.get('top_k')}")):
        if key in row:
            out[name] = round(100 * row[key][0], 1)
    if row.get("token_ratio") is not None:
        out["tokens/baseline"] = round(row["token_ratio"], 3)
    return out


def write_dvc_views(arms: dict, summary: dict, out: Path) -> None:
    """curves/ARM.csv (plots) and arms/ARM.json (metrics), one file per arm."""
    for sub, ext in (("curves", "csv"), ("arms", "json")):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(f"*.{ext}"):  # an arm no longer reported
            stale.unlink()
    for arm, runs in arms.items():
        (out / "curves" / f"{arm}.csv").write_text(curve_table(runs))
        (out / "arms" / f"{arm}.json").write_text(json.dumps(arm_metrics(summary[arm]), indent=1) + "\n")


def write_report(root: str | Path, *, baseline: str = "grpo", title: str = "", out_dir: str | Path | None = None,
                 only: tuple[str, ...] = ()) -> str:
    """Write report.md, curves.png and results.json to `out_dir` (default: the study's root),
    and the DVC views curves/ARM.csv and arms/ARM.json; `only` keeps just those arms (in
    that order), e.g. for a readable figure."""
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root
    arms = load_arms(root)
    if only:
        from pipeline.errors import UserError

        missing = [a for a in only if a not in arms]
        if missing:
            raise UserError(f"{root}: no finished runs of {missing}; arms with finished runs: {sorted(arms)}")
        arms = {a: arms[a] for a in only}
    if not arms:
        from pipeline.errors import UserError

        raise UserError(f"{root}: no finished runs (*/seed*/summary.json); run `s2lpo study run` first")
    summary = summarise(arms, baseline)
    table = format_table(summary)
    out.mkdir(parents=True, exist_ok=True)
    plot(arms, out / "curves.png", title)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    write_dvc_views(arms, summary, out)
    (out / "report.md").write_text(f"# {title or root.name}\n\n{table}\n\n![curves](curves.png)\n")
    return table
