"""The DVC views the README and docs/pipeline.md advertise work as shown: `dvc plots show` loads every plot
declared in this repository's dvc.yaml and `dvc metrics show` prints a table of a few
columns, on a workspace of the files each stage's own writer produces (the study report
from per-step metrics of three arms, evaluate's outputs from scored samples of four
models, the diversity report from those, prepare's SFT curves) — real `dvc`, real writers,
small made-up samples (a real `dvc repro` of the whole pipeline takes minutes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARMS = ("grpo", "noise", "s2lpo")
MODELS = ("explorer", "learner", "grpo", "s2lpo")
pytestmark = pytest.mark.slow  # dvc's start-up, three times, and matplotlib: ~20 s


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def _write_study(root: Path) -> None:
    from stage2_train.report import write_report

    rng = np.random.default_rng(0)
    for k, arm in enumerate(ARMS):
        run = root / "data/study/default" / arm / "seed0"
        run.mkdir(parents=True)
        recs = []
        for step in range(0, 41, 10):
            flawed, rest = min(1.0, 0.02 * step * (1 + k)) * rng.uniform(0.8, 1), 0.9 + 0.002 * step
            recs.append({"step": step, "eval/pass@1": (flawed + rest) / 2, "eval/flawed/pass@1": flawed,
                         "eval/rest/pass@1": rest, "eval/pass@8": 0.97, "online_tokens": (3 - k) * 100 * step,
                         "time/step": 0.8})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "summary.json").write_text("{}")
    write_report(root / "data/study/default", out_dir=root / "data/report/study")


def _write_evals(root: Path) -> None:
    from pipeline.data import Problem
    from pipeline.evaluate.diversity import Counting
    from pipeline.evaluate.diversity_report import parse_run, write_report
    from pipeline.evaluate.results import ProblemResult, benchmark_metrics, passk_csv, results_table, summary_metrics

    rng = np.random.default_rng(1)
    for k, model in enumerate(MODELS):
        out = root / "data/eval" / model
        out.mkdir(parents=True)
        results = []
        for i in range(8):
            problem = Problem(f"t{i}", f"{10 + i}+{20 + i}", str(30 + 2 * i), {"flawed": i < 3})
            right = rng.random(8) < (0.3 + 0.1 * k if i >= 3 else 0.1 * (3 - k))
            responses = tuple(f"{problem.question}={30 + 2 * i if r else j}" for j, r in enumerate(right))
            results.append(ProblemResult(problem, responses, tuple(str(30 + 2 * i) if r else None for r in right),
                                         tuple(bool(r) for r in right), (6,) * 8, ("stop",) * 8))
        metrics = {"testbed": benchmark_metrics(results, [1, 2, 4, 8]), "wall_s": 1.0}
        pq.write_table(results_table(model, "testbed", results), out / "results.parquet")
        (out / "config.json").write_text(json.dumps({"label": model}))
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "summary.json").write_text(json.dumps(summary_metrics(metrics)))
        (out / "passk.csv").write_text(passk_csv(metrics))
    write_report([parse_run(f"{m}={root / 'data/eval' / m}") for m in MODELS], str(root / "data/report/diversity"),
                 counting=Counting.ANSWER)


def _write_family(root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.testbed.build import _write_loss_csv

    out = root / "data/testbed"
    out.mkdir(parents=True)
    _write_loss_csv(out / "sft_loss.csv", {"explorer": list(np.linspace(4, 1, 30)), "learner": list(np.linspace(4, 0.5, 50))})
    plt.plot([1, 2, 4], [0.2, 0.3, 0.4])
    plt.savefig(out / "passk.png")
    plt.close()


@pytest.fixture(scope="module")
def pipeline_tree(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvc-repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")  # the train matrix reads study_default.seeds
    assert _dvc(repo, "init", "--no-scm").returncode == 0
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # the plots' template
    _write_family(repo)
    _write_study(repo)
    _write_evals(repo)
    return repo


def test_every_declared_plot_loads(pipeline_tree):
    declared = yaml.safe_load((pipeline_tree / "dvc.yaml").read_text())["plots"]
    ids = [next(iter(p)) if isinstance(p, dict) else p for p in declared]
    text = _dvc(pipeline_tree, "plots", "show")
    assert text.returncode == 0 and "failed to load" not in text.stdout + text.stderr, text.stderr
    shown = json.loads(_dvc(pipeline_tree, "plots", "show", "--json").stdout)
    assert shown.get("errors", []) == []
    assert sorted(shown["data"]) == sorted(ids)
    for plot in declared:
        if not isinstance(plot, dict):  # an image
            continue
        (plot_id, props), = plot.items()
        (rendered,) = shown["data"][plot_id]
        spec = rendered["content"]
        assert rendered["type"] == "vega" and spec["title"] == props["title"]
        assert spec["encoding"]["x"]["title"] == props["x_label"] and spec["encoding"]["y"]["title"] == props["y_label"]
        assert spec["encoding"]["color"]["field"] == "series"  # one colour per model / arm (template series.json)
        lines = {(d["filename"], d["field"]) for d in spec["data"]["values"]}
        assert len(lines) == sum(len(v) if isinstance(v, list) else 1 for v in props["y"].values())
    assert (pipeline_tree / "dvc_plots" / "index.html").is_file()


def test_metrics_show_prints_a_narrow_table(pipeline_tree):
    shown = json.loads(_dvc(pipeline_tree, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()  # keyed "" without git
    files = workspace["data"]
    assert sorted(files) == sorted(
        [f"data/eval/{m}/summary.json" for m in ("explorer", "learner", "grpo", "s2lpo")]
        + [f"data/report/study/arms/{a}.json" for a in ("grpo", "noise", "s2lpo")]
        + [f"data/report/diversity/distinct/{m}.json" for m in ("explorer", "learner", "grpo", "s2lpo")])
    assert all("error" not in v for v in files.values())
    assert set(files["data/eval/s2lpo/summary.json"]["data"]["testbed"]) == {"pass@1", "flawed", "rest", "pass@8"}
    assert set(files["data/report/study/arms/s2lpo.json"]["data"]) == {"pass@1", "flawed", "rest", "pass@8",
                                                                      "tokens/baseline"}
    table = _dvc(pipeline_tree, "metrics", "show").stdout.splitlines()
    header = table[0].split()
    assert len(header) <= 12 and max(map(len, table)) <= 200, "\n".join(table)  # was ~300 columns
    assert len(table) == 1 + len(files)
