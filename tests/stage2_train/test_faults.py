"""Stage 2 under faults: kill -9 at random moments, a full disk during a checkpoint or a
metrics write, a checkpoint file that would run code when unpickled, and non-finite
rewards. Each leaves the last good checkpoint as it was and says so in one line."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import load_stage_config, to_dict
from pipeline.errors import UserError
from stage2_train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from stage2_train.config import AnnealConfig, TrainConfig
from stage2_train.metrics import read_jsonl
from stage2_train.schedule import Schedule
from stage2_train.trainer import run_train

pytestmark = pytest.mark.slow
DISK_FULL = "[Errno 28] No space left on device"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()  # these runs set threads=1, like `--set threads=1`
    yield
    torch.set_num_threads(threads)


def _run(cfg, **kw):
    return run_train(cfg, echo=lambda *_: None, progress=False, **kw)


def _quiet(train_config, **changes) -> TrainConfig:
    """No evaluation or TensorBoard, one thread: only what the faults touch."""
    eval_off = dataclasses.replace(train_config().eval, every=0, problems=None)
    return train_config(eval=eval_off, tensorboard=False, threads=1, **changes)


def _training_keys(records):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "eval/"))} for r in records]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _complete_checkpoints(out: Path) -> list[str]:
    """Names of the step-* checkpoints, after checking none is half-written and that
    `latest` (when present) names one of them."""
    root = out / "checkpoints"
    done = sorted(p.name for p in root.glob("step-*")) if root.exists() else []
    for name in done:
        files = {p.relative_to(root / name).as_posix() for p in (root / name).rglob("*") if p.is_file()}
        assert {"optimizer.pt", "state.json", "model/model.safetensors"} <= files, (name, files)
        assert json.loads((root / name / "state.json").read_text())["step"] == int(name.split("-")[1])
    if (root / "latest").exists():
        assert (root / "latest").read_text() in done
    return done


def _latest(out: Path) -> str | None:
    pointer = out / "checkpoints" / "latest"
    return pointer.read_text() if pointer.exists() else None


# --- kill -9 of a real `s2lpo train` ----------------------------------------------------

KILL_DURING_CHECKPOINT = """
import os, signal, sys, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):  # a checkpoint writes its weights, then the optimizer, then state.json
    if sys.argv[2] in str(f):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from pipeline.cli import app
app(["train", "--params", sys.argv[1], "--no-progress", "--resume"])
"""


def _cli(params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "train", "--params", str(params), "--no-progress", *extra]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as err:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)


def _kill_when(proc: subprocess.Popen, metrics: Path, step: int, delay: float, log: Path) -> None:
    """SIGKILL `proc` `delay` seconds after it records `step` in metrics.jsonl. A resumed run
    first cuts the file back (replacing it), so records left by an earlier run do not count."""
    stale = metrics.stat().st_ino if metrics.exists() else None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.stat().st_ino != stale and any(r.get("step") == step for r in _records(metrics)):
            break
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL, log.read_text()[-2000:]


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line the kill tore
    return out


def test_kill_9_before_during_and_after_checkpoints_then_resume_repeats_the_run(train_config, tmp_path):
    cfg = _quiet(train_config, steps=6, checkpoint_every=2, out_dir=str(tmp_path / "killed"))
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"train": to_dict(cfg)}))
    assert load_stage_config(TrainConfig, "train", params_path=params) == cfg  # the CLI runs this very config
    out, metrics, rng = Path(cfg.out_dir), Path(cfg.out_dir) / "metrics.jsonl", random.Random(11)
    log = tmp_path / "stderr.log"

    # 1. a random moment before the first checkpoint: just after step 0 or step 1 is logged
    _kill_when(_start(_cli(params), log), metrics, rng.choice([0, 1]), rng.uniform(0.0, 0.05), log)
    assert _latest(out) is None and _complete_checkpoints(out) == []

    # 2. resumed (from the start: no checkpoint yet), killed while writing step 4's checkpoint
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_CHECKPOINT, str(params), "step-000004"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _latest(out) == "step-000002" and _complete_checkpoints(out) == ["step-000002"]
    half = out / "checkpoints" / ".tmp-step-000004"
    assert (half / "model" / "model.safetensors").exists() and not (half / "state.json").exists()

    # 3. resumed from step 2, killed at a random moment of steps 4..6 and after (checkpoint writes included)
    _kill_when(_start(_cli(params, "--resume"), log), metrics, rng.choice([3, 4, 5]), rng.uniform(0.0, 0.3), log)
    assert _latest(out) in _complete_checkpoints(out)  # step 2, 4 or 6, whole whichever it is

    # 4. resumed to the end; the same run uninterrupted gives the same records and weights
    _run(cfg, resume=True)
    whole = dataclasses.replace(cfg, out_dir=str(tmp_path / "whole"))
    _run(whole)
    a, b = read_jsonl(tmp_path / "whole/metrics.jsonl"), read_jsonl(metrics)
    assert [r["step"] for r in b] == list(range(7))
    assert _training_keys(b) == _training_keys(a)  # bit-for-bit on one CPU thread
    wa, wb = _weights(tmp_path / "whole/model"), _weights(out / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _complete_checkpoints(out) == ["step-000004", "step-000006"]
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the half-written one was cleared


# --- a full disk -----------------------------------------------------------------------


def _fail_on(monkeypatch, target, attr, exc, match):
    """Make `target.attr` raise `exc` when its arguments, joined by spaces, contain `match`."""
    real = getattr(target, attr)

    def failing(*args, **kwargs):
        if match in " ".join(str(a) for a in args):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, failing)


def _safetensors_disk_full():
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("write", ["weights", "optimizer", "state", "rename", "latest"])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(write, train_config,
                                                                                 monkeypatch):
    import transformers

    import stage2_train.checkpoint as ckpt_module

    cfg = _quiet(train_config, steps=2, checkpoint_every=1)
    out = Path(cfg.out_dir)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if write == "weights":  # safetensors reports a full disk as its own error type
        _fail_on(monkeypatch, transformers.PreTrainedModel, "save_pretrained", _safetensors_disk_full(), "step-000002")
    elif write == "optimizer":  # torch.save reports it as a RuntimeError from its zip writer
        _fail_on(monkeypatch, ckpt_module.torch, "save", RuntimeError("PytorchStreamWriter failed writing file "
                                                                     "data/0: file write failed"), "step-000002")
    elif write == "state":
        _fail_on(monkeypatch, Path, "write_text", full, "step-000002/state.json")
    elif write == "rename":
        _fail_on(monkeypatch, ckpt_module.os, "replace", full, "step-000002")
    else:
        _fail_on(monkeypatch, Path, "write_text", full, ".tmp-latest step-000002")  # (path, text)
    with pytest.raises(UserError) as failure:
        _run(cfg)
    message = str(failure.value)
    assert "\n" not in message and message.startswith(f"{out / 'checkpoints/step-000002'}: cannot write this checkpoint")
    assert f"{out / 'checkpoints/latest'} still names the last good one" in message
    assert _latest(out) == "step-000001"
    # a failed rename of `latest` leaves a complete step 2 beside it, unused until named
    assert _complete_checkpoints(out) == ["step-000001"] + (["step-000002"] if write == "latest" else [])
    assert not (out / "checkpoints/.tmp-step-000002").exists()
    monkeypatch.undo()
    _run(cfg, resume=True)  # space freed: the run resumes from step 1
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2] and _latest(out) == "step-000002"


def test_a_full_disk_during_a_metrics_write_is_one_line_and_resumes(train_config, monkeypatch):
    import stage2_train.metrics as metrics_module

    cfg = _quiet(train_config, steps=2, checkpoint_every=1)
    out = Path(cfg.out_dir)
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # records 0 and 1 go through, step 2's does not
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(metrics_module.os, "fsync", fsync)
    with pytest.raises(UserError) as failure:
        _run(cfg)
    assert str(failure.value) == (f"{out / 'metrics.jsonl'}: cannot write step 2's metrics ({DISK_FULL}); free space, "
                                  "then resume with --resume from the last checkpoint")
    assert _latest(out) == "step-000001" and _complete_checkpoints(out) == ["step-000001"]
    monkeypatch.undo()
    _run(cfg, resume=True)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2]


# --- untrusted checkpoint files --------------------------------------------------------


class _RunsCode:
    """Unpickling this calls Path.touch(marker): what a hostile optimizer.pt could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_checkpoint_state_loads_with_weights_only_and_pickled_code_is_refused(tiny_model, tmp_path):
    import copy

    model = copy.deepcopy(tiny_model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, step=1, model=model, optimizer=optimizer, state={"online_tokens": 3}, keep=1)
    fresh = copy.deepcopy(tiny_model)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state = load_checkpoint(path, model=fresh, optimizer=fresh_opt)
    assert state["step"] == 1 and state["online_tokens"] == 3
    saved, loaded = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)

    marker = tmp_path / "code-ran"
    torch.save({"state": {}, "param_groups": [], "payload": _RunsCode(marker)}, path / "optimizer.pt")
    with pytest.raises(UserError, match=r"optimizer.pt: not a plain tensor file \(.*\); the checkpoint is damaged"):
        read_checkpoint(path)
    assert not marker.exists()  # weights_only refused the payload before it ran
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path / "optimizer.pt", weights_only=True)
    torch.load(path / "optimizer.pt", weights_only=False)  # the control: a plain unpickle runs it
    assert marker.exists()


def test_no_module_unpickles_a_file():
    """Banks are Parquet and JSON, checkpoints safetensors, JSON and a weights_only state
    dict: no pickle.load, np.load(allow_pickle=True) or torch.load without weights_only."""
    import re

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in sorted(p for d in ("pipeline", "stage1_explore", "stage2_train") for p in (root / d).rglob("*.py")):
        text = path.read_text()
        for match in re.finditer(r"pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\(([^)]*)\)", text):
            if match.group(0).startswith("torch.load") and "weights_only=True" in match.group(1):
                continue
            offenders.append(f"{path.relative_to(root)}: {match.group(0)}")
    assert offenders == []


# --- non-finite rewards ----------------------------------------------------------------


def _poisoned_scorer(monkeypatch, value: float, from_call: int) -> None:
    import stage2_train.setup_run as setup_module

    real, calls = setup_module.make_scorer, []

    def make_scorer(cfg):
        score = real(cfg)

        def poisoned(responses, golds):
            scores = score(responses, golds)
            calls.append(len(responses))
            return [dataclasses.replace(s, reward=value) for s in scores] if len(calls) >= from_call else scores

        return poisoned

    monkeypatch.setattr(setup_module, "make_scorer", make_scorer)


def _bank_with_nan_rewards(world: Path, tmp_path: Path) -> Path:
    import shutil

    bank = tmp_path / "bank"
    shutil.copytree(world / "bank", bank)
    for shard in (bank / "shards").glob("*.parquet"):
        table = pq.read_table(shard)
        nan = pa.array([float("nan")] * table.num_rows, type=table.schema.field("reward").type)
        pq.write_table(table.set_column(table.schema.get_field_index("reward"), "reward", nan), shard)
    return bank


@pytest.mark.parametrize("source, value", [("verifier", float("nan")), ("verifier", float("inf")),
                                           ("bank", float("nan"))])
def test_non_finite_rewards_stop_the_run_with_step_cause_and_last_checkpoint(source, value, train_config,
                                                                           train_world, monkeypatch, tmp_path):
    if source == "verifier":  # the learner's own responses, from step 2: step 1 is checkpointed
        _poisoned_scorer(monkeypatch, value, from_call=2)
        cfg = _quiet(train_config, steps=3, checkpoint_every=1,
                     anneal=AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.5))
        step, last, fix = 2, f"{cfg.out_dir}/checkpoints/step-000001", "Fix the verifier"
    else:  # step 1 draws only bank rows (α = 1), before any checkpoint
        cfg = _quiet(train_config, steps=2, checkpoint_every=1, bank=str(_bank_with_nan_rewards(train_world, tmp_path)))
        step, last, fix = 1, "none yet (the run starts from the initial learner)", "Repair the bank's reward column"
    with pytest.raises(UserError) as failure:
        _run(cfg)
    message = str(failure.value)
    assert message.startswith(f"step {step}: ") and "\n" not in message
    assert f"rewards are not finite (e.g. {value}, from the {source})" in message
    assert message.endswith(f"last good checkpoint: {last}. {fix} and resume with --resume")
    assert _latest(Path(cfg.out_dir)) == (None if source == "bank" else "step-000001")
