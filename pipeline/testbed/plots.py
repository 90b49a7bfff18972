"""Plots of the testbed family: pass@k curves of explorer and learner, by subset."""

from __future__ import annotations

from pathlib import Path


def plot_family_passk(report: dict, path: Path) -> None:
    """One panel per subset (all / flawed / rest), pass@k against k on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(report["learner"]["pass_at_k"])
    fig, axes = plt.subplots(1, len(subsets), figsize=(4 * len(subsets), 3.4), squeeze=False)
    for ax, subset in zip(axes[0], subsets):
        for name, style in (("explorer", "o--"), ("medium", "^-."), ("learner", "s-")):
            if name not in report:
                continue
            table = report[name]["pass_at_k"][subset]
            ks = [int(k) for k in table]
            ax.plot(ks, [100 * table[str(k)] for k in ks], style,
                    label=f"{name} ({report[name]['parameters'] / 1e6:.2f}M)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_title(f"{subset} problems")
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pass@k (%)")
    axes[0][0].legend(loc="lower right")
    fig.suptitle(f"testbed family, n = {report['n_samples']} samples, T = {report['temperature']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
