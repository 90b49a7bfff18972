"""Checkpoints: everything a resumed run needs to continue exactly where it stopped.

Layout under `<out_dir>/checkpoints/`:

    step-000020/model/        learner weights (or the LoRA adapter) via save_pretrained
    step-000020/optimizer.pt  AdamW state
    step-000020/state.json    step, online tokens so far, data order and rng states
    latest                    name of the newest complete checkpoint

A checkpoint is written into `.tmp-step-…` and renamed into place, then `latest` is
replaced atomically, so a crash at any moment leaves the previous checkpoint intact.
Per-step randomness (prompt order, bank draws, sampling, mini-batch order) is derived
from (seed, step), and the rng states are stored as well, so a resumed run repeats the
uninterrupted one exactly on the same machine.

Under torchrun rank 0 writes the checkpoint: whole weights and the optimizer state (FSDP
gathers both first; its optimizer state is then keyed by parameter name), and state.json
records the world size, which a resumed run must match.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError

LATEST = "latest"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: str | Path, *, step: int, model, optimizer, state: dict, keep: int,
                    model_state: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write step `step`; `model_state`/`optimizer_state` replace the objects' own state
    dicts (FSDP's gathered ones)."""
    from safetensors import SafetensorError

    root = checkpoint_dir(out_dir)
    name = f"step-{step:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        extra = {} if model_state is None else {"state_dict": model_state}
        model.save_pretrained(tmp / "model", safe_serialization=True, **extra)
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
        full = dict(state, step=step, rng=_rng_states())
        (tmp / "state.json").write_text(json.dumps(full, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _write_latest(root, name)
    except (OSError, SafetensorError, RuntimeError) as exc:  # a full disk: torch.save raises RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{final}: cannot write this checkpoint ({_first_line(exc)}); {root / LATEST} still names the "
                        "last good one; free space or fix permissions, then resume with --resume") from None
    _prune(root, keep)
    return final


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = checkpoint_dir(out_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise UserError(f"{pointer}: names {path.name}, which is incomplete; delete {pointer} to resume from "
                        "an older checkpoint or start a fresh out_dir")
    return path


def load_checkpoint(path: Path, *, model, optimizer) -> dict:
    """Restore weights, optimizer and rng states in place; returns the saved state."""
    tensors, optimizer_state, state = read_checkpoint(path)
    load_weights(model, tensors)
    optimizer.load_state_dict(optimizer_state)
    set_rng_states(state["rng"])
    return state


def read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(weights by name, optimizer state dict, state.json) of a checkpoint directory."""
    from safetensors.torch import load_file

    weights = sorted((path / "model").glob("*.safetensors"))
    if not weights:
        raise UserError(f"{path / 'model'}: no safetensors weights; the checkpoint is damaged")
    tensors = {}
    for f in weights:
        tensors.update(load_file(str(f)))
    optimizer_state = _load_tensors(path / "optimizer.pt")
    return tensors, optimizer_state, json.loads((path / "state.json").read_text())


def load_weights(model, tensors: dict) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, tensors)
        return
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    check_keys(missing, unexpected)


def check_keys(missing: list[str], unexpected: list[str]) -> None:
    # tied embeddings are saved once; anything else missing means a different model
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise UserError(f"checkpoint does not match the learner (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); resume with the same learner and lora settings")


def _load_tensors(path: Path) -> dict:
    """A state dict saved by `torch.save`, unpickled with `weights_only=True`: tensors and
    plain containers only, so a file that would run code on load is refused."""
    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError) as exc:
        raise UserError(f"{path}: not a plain tensor file ({_first_line(exc)}); the checkpoint is damaged or was "
                        "not written by s2lpo; resume from another checkpoint or start a fresh out_dir") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".tmp-{LATEST}"
    tmp.write_text(name)
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {"python": repr(random.getstate()), "torch": torch.get_rng_state().tolist(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_states(rng: dict) -> None:
    import ast

    random.setstate(_tuplify(ast.literal_eval(rng["python"])))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
