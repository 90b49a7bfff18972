import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"s2lpo {__version__}"


def test_help_lists_every_stage_without_heavy_imports():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("prepare", "explore", "train", "evaluate", "diversity"):
        assert command in proc.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, pipeline.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"  # heavy imports live inside command bodies


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "nope=1"], "prepare.nope: unknown key"),
        (["--set", "learner.sft_steps=many"], "prepare.learner.sft_steps: expected int"),
        (["--set", "garbage"], "expected KEY=VALUE"),
    ],
)
def test_prepare_config_errors_are_one_line(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", *args])
    assert result.exit_code == 2
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


def test_prepare_missing_params_file(tmp_path):
    result = runner.invoke(app, ["prepare", "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml: params file not found" in result.output


def test_train_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--set", "loss.baseline=median"])
    assert result.exit_code == 2 and "train.loss.baseline" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["train", "--set", "prompts=missing.jsonl"])
    assert result.exit_code == 2 and "missing.jsonl" in result.output
    assert len(result.output.strip().splitlines()) == 1
