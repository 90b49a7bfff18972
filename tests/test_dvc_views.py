"""The DVC views the README advertises work as shown: a tiny real `dvc repro` of this
repository's dvc.yaml (prepare → … → report, every stage the real `s2lpo` command, on a
family of a few SFT steps), then `dvc plots show` loads every declared plot and
`dvc metrics show` prints a table of a few columns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a whole pipeline, tiny: ~3 min on a loaded 2-core CPU

TINY = {  # params.yaml overrides: every stage runs, each in seconds
    "prepare": {"train_size": 24, "test_size": 12, "test_flawed": 4, "eval_samples": 4,
                "explorer": {"sft_steps": 8}, "learner": {"sft_steps": 8}},
    "explore": {"samples_per_prompt": 2, "max_new_tokens": 24, "scoring_workers": 0},
    "train": {"prompts_per_step": 2, "group_size": 2, "mini_batch_size": 4, "micro_batch_size": 4,
              "max_new_tokens": 24, "eval": {"every": 1, "samples": 2}},
    "study_default": {"seeds": [0], "base": {"steps": 2, "anneal": {"t_mix": 2}, "checkpoint_every": 2}},
    "evaluate": {"samples": 4, "max_new_tokens": 24, "scoring_workers": 0},
}


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def pipeline_tree(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvc-repo")
    for name in ("pipeline", "stage1_explore", "stage2_train"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _dvc(repo, "init", "--no-scm").returncode == 0
    run = _dvc(repo, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
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
        assert rendered["type"] == "vega"
        spec = rendered["content"]
        assert spec["title"]["text"] == props["title"] if isinstance(spec["title"], dict) else spec["title"] == props["title"]
        assert spec["encoding"]["x"]["title"] == props["x_label"] and spec["encoding"]["y"]["title"] == props["y_label"]
        lines = {(d["filename"], d["field"]) for d in spec["data"]["values"]}
        assert len(lines) == len(props["y"]) if isinstance(next(iter(props["y"].values())), str) else True
    assert (pipeline_tree / "dvc_plots" / "index.html").is_file()


def test_metrics_show_prints_a_narrow_table(pipeline_tree):
    shown = json.loads(_dvc(pipeline_tree, "metrics", "show", "--json").stdout)
    files = shown["workspace"]["data"]
    assert sorted(files) == sorted(
        [f"data/eval/{m}/summary.json" for m in ("explorer", "learner", "grpo", "s2lpo")]
        + [f"data/report/study/arms/{a}.json" for a in ("grpo", "noise", "s2lpo")]
        + [f"data/report/diversity/distinct/{m}.json" for m in ("explorer", "learner", "grpo", "s2lpo")])
    assert all("error" not in v for v in files.values())
    assert set(files["data/eval/s2lpo/summary.json"]["data"]["testbed"]) == {"pass@1", "flawed", "rest", "pass@4"}
    assert set(files["data/report/study/arms/s2lpo.json"]["data"]) == {"pass@1", "flawed", "rest", "pass@2",
                                                                      "tokens/baseline"}
    table = _dvc(pipeline_tree, "metrics", "show").stdout.splitlines()
    header = table[0].split()
    assert len(header) <= 20 and max(map(len, table)) <= 220, "\n".join(table)
    assert len(table) == 1 + len(files)
