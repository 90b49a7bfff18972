"""The launch/ scripts: their dry runs print the command lines docs/scaling.md shows, and the
stage-1 launcher really runs one worker per device into one bank (on CPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCALING = ROOT / "docs" / "scaling.md"  # the launchers' page (the README links it)
SCRIPTS = ("explore_local.sh", "explore_slurm.sh", "train_torchrun.sh")


def doc_examples() -> list[tuple[str, list[str]]]:
    """(command, output lines) of every `$ ... launch/... --dry-run` line in docs/scaling.md."""
    lines = SCALING.read_text().splitlines()
    examples = []
    for i, line in enumerate(lines):
        if line.startswith("$ ") and "launch/" in line and ("--dry-run" in line or "DRY_RUN=1" in line):
            output = []
            for follow in lines[i + 1 :]:
                if follow.startswith(("$ ", "```")):
                    break
                output.append(follow)
            examples.append((line[2:], output))
    return examples


def test_the_docs_show_every_launcher():
    shown = " ".join(command for command, _ in doc_examples())
    assert all(f"launch/{name}" in shown for name in SCRIPTS)


@pytest.mark.parametrize("command, output", doc_examples(), ids=lambda x: x if isinstance(x, str) else "")
def test_dry_runs_print_the_docs_command_lines(command, output):
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == output


def _explore_params(family: Path, path: Path, **changes) -> Path:
    section = {"prompts": str(family / "train.jsonl"), "explorer": str(family / "explorer"),
               "bank": str(path.parent / "bank"), "samples_per_prompt": 2, "max_new_tokens": 8,
               "prompts_per_shard": 16, "engine": "hf", "scoring_workers": 0, **changes}
    path.write_text(yaml.safe_dump({"explore": section}))
    return path


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPUS="2", S2LPO=f"{sys.executable} -m pipeline.cli", LOG_DIR=str(tmp_path / "logs"))
    return subprocess.run(["bash", str(ROOT / "launch/explore_local.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_explore_launcher_fills_one_bank_with_a_worker_per_device(tiny_family, tmp_path):
    from pipeline.bank.inspect import verify_bank
    from pipeline.bank.store import open_bank

    done = _launch(tmp_path, "--params", str(_explore_params(tiny_family, tmp_path / "params.yaml")))
    logs = {i: (tmp_path / f"logs/explore-worker-{i}.log").read_text() for i in (0, 1)}
    assert done.returncode == 0, done.stderr + str(logs)
    assert "worker 0/2" in logs[0] and "worker 1/2" in logs[1]
    assert sorted(p.name for p in (tmp_path / "bank/manifests").iterdir()) == ["worker-0of2.json", "worker-1of2.json"]
    assert verify_bank(open_bank(str(tmp_path / "bank")), 2) == []


@pytest.mark.slow
def test_explore_launcher_fails_when_a_worker_fails(tiny_family, tmp_path):
    params = _explore_params(tiny_family, tmp_path / "params.yaml", explorer=str(tmp_path / "missing"))
    done = _launch(tmp_path, "--params", str(params))
    assert done.returncode == 1
    assert "explore worker 0 failed" in done.stderr and "explore worker 1 failed" in done.stderr


def test_estimate_prints_the_recipes_memory_and_time_bounds(monkeypatch, capsys):
    """launch/estimate.py wraps pipeline.memory (the train dry run's lines) and pipeline.throughput."""
    import importlib.util

    from huggingface_hub import constants

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")
    spec = importlib.util.spec_from_file_location("estimate", ROOT / "launch" / "estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([])
    out = capsys.readouterr().out
    assert "peak 69.4 GB per GPU while vLLM samples, of 80 GB" in out
    page = SCALING.read_text()
    shown = page[page.index("$ python launch/estimate.py\n"):].split("```")[0].splitlines()[1:]
    assert shown and out.splitlines()[-len(shown):] == shown  # the page's lines are the output's last ones
