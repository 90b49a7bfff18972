"""Per-step metrics: one JSON object per line in `metrics.jsonl`, the same scalars in
TensorBoard (`tb/`), and optionally Weights & Biases.

On resume the JSONL is cut back to the checkpoint's step and TensorBoard purges later
events, so an interrupted-and-resumed run has exactly one record per step. A run that
starts from step 0 (`resume_step=None`: new, or killed before its first checkpoint)
starts both from empty.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class MetricsLog:
    def __init__(self, out_dir: str | Path, *, resume_step: int | None = None, tensorboard: bool = True,
                 wandb_project: str | None = None, run_name: str = "", config: dict | None = None) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_jsonl(self.path, -1 if resume_step is None else resume_step)
        self._file = self.path.open("a")
        self._write_failed = False
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=0 if resume_step is None else resume_step + 1)
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                from pipeline.errors import UserError

                raise UserError("wandb_project is set but wandb is not installed; `pip install wandb` "
                                "or set wandb_project: null") from None
            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")

    def log(self, step: int, values: dict) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:  # disk full: a resumed run cuts the file back to its checkpoint
            from pipeline.errors import UserError

            self._write_failed = True
            raise UserError(f"{self.path}: cannot write step {step}'s metrics ({exc}); free space, then resume with "
                            "--resume from the last checkpoint") from None
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            if not self._write_failed:  # after a failed write, closing retries the same flush
                raise
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def truncate_jsonl(path: Path, keep_through_step: int) -> None:
    """Drop records with step > keep_through_step (and a torn last line), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
        if record.get("step", 0) <= keep_through_step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no nan/inf
    return v
