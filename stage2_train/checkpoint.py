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
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError

LATEST = "latest"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: str | Path, *, step: int, model, optimizer, state: dict, keep: int) -> Path:
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    full = dict(state, step=step, rng=_rng_states())
    (tmp / "state.json").write_text(json.dumps(full, indent=1))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_latest(root, name)
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
    from safetensors.torch import load_file

    weights = sorted((path / "model").glob("*.safetensors"))
    if not weights:
        raise UserError(f"{path / 'model'}: no safetensors weights; the checkpoint is damaged")
    tensors = {}
    for f in weights:
        tensors.update(load_file(str(f)))
    _load_weights(model, tensors)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    _set_rng_states(state["rng"])
    return state


def _load_weights(model, tensors: dict) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, tensors)
        return
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    # tied embeddings are saved once; anything else missing means a different model
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise UserError(f"checkpoint does not match the learner (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); resume with the same learner and lora settings")


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


def _set_rng_states(rng: dict) -> None:
    import ast

    random.setstate(_tuplify(ast.literal_eval(rng["python"])))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
