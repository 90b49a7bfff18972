"""`s2lpo train`: the run around the step — setup, the step loop, evaluation, checkpoints.

Setup (stage2_train.setup_run) refuses, in one line each, a bank made for another
learner, template or prompt set; the trainer refuses an out_dir that already holds a
different run. The loop (stage2_train.step.train_step) draws the prompts of step i from
a per-epoch permutation fixed by the seed, so a resumed run sees the same data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.config import to_dict
from pipeline.errors import UserError
from stage2_train import checkpoint as ckpt
from stage2_train.config import TrainConfig
from stage2_train.context import Run
from stage2_train.distributed import Dist, gathered_states, init_distributed, load_full_states
from stage2_train.metrics import MetricsLog
from stage2_train.setup_run import setup
from stage2_train.step import prefetch_bank, train_step

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pipeline.verifier import Scorer
    from stage2_train.rollout_engines import RolloutEngine

# settings a resumed run may change (they do not alter what the steps compute); batch_size is
# generate_batch_size's name in the config.json of runs started before the rename
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "tensorboard", "wandb_project", "threads",
                     "scoring_workers", "score_timeout_s", "generate_batch_size", "batch_size", "gpus"}


def run_train(cfg: TrainConfig, *, resume: bool = False, echo: Callable[[str], None] = print,
              progress: bool = True) -> dict:
    """Train for `cfg.steps` steps (continuing from the latest checkpoint with `resume`),
    in this process or, launched by torchrun, as one of its ranks."""
    from pipeline.engines import EngineKind, resolve_engine_kind
    from stage2_train.plan import check_memory

    from transformers.utils import logging as hf_logging

    check_memory(cfg)  # before anything loads: refuse what cannot fit the GPUs this process sees
    hf_logging.disable_progress_bar()  # per-file load/save bars would drown the step bar
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tp = cfg.tensor_parallel_size if resolve_engine_kind(cfg.engine) is EngineKind.VLLM else 1
    d = init_distributed(cfg.distributed.strategy, tp=tp, timeout_minutes=cfg.distributed.timeout_minutes)
    try:
        return _train(cfg, d, resume, echo if d.is_main else (lambda *_: None), progress and d.is_main)
    finally:
        d.close()


@dataclass(frozen=True)
class _Sampling:
    """What in-training evaluation samples and scores with (stage2_train.held_out.Evaluator)."""

    dist: Dist
    engine: RolloutEngine
    tokenizer: PreTrainedTokenizerBase
    scorer: Scorer


def _train(cfg: TrainConfig, d: Dist, resume: bool, echo: Callable[[str], None], progress: bool) -> dict:
    """The step loop. `cfg` is the user's (what config.json records and a resume compares);
    `run.cfg` has the template resolved (the bank's when unset)."""
    from tqdm import tqdm

    from stage2_train.held_out import Evaluator

    out = Path(cfg.out_dir)
    d.from_main(lambda: _claim_out_dir(cfg, out, resume, write=False))  # refuse before the slow setup
    run = setup(cfg, d, echo=echo)
    d.from_main(lambda: _claim_out_dir(cfg, out, resume))  # a refused setup leaves no out_dir behind
    start = 0
    if resume and (path := d.from_main(lambda: ckpt.latest_checkpoint(out))) is not None:
        state = _restore(run, path)
        start, run.online_tokens, run.last_checkpoint = state["step"], state["online_tokens"], str(path)
        echo(f"resuming from {path} (step {start})")
    evaluator = Evaluator(run.cfg, _Sampling(d, run.rollouts.engine, run.learner.tokenizer, run.rollouts.scorer))
    prefetch_bank(run, start + 1)  # decoded while step `start` is evaluated
    log = _open_log(cfg, out, start, d)
    try:
        if start == 0:
            log.log(0, {"online_tokens": 0, **evaluator.evaluate(0)})
        bar = tqdm(range(start + 1, cfg.steps + 1), desc="train", unit="step", initial=start, total=cfg.steps,
                   dynamic_ncols=True, disable=not progress)
        for step in bar:
            stats = train_step(run, step)
            if cfg.eval.every and (step % cfg.eval.every == 0) or step == cfg.steps:
                stats.update(evaluator.evaluate(step))
            log.log(step, stats)
            bar.set_postfix(alpha=f"{stats['alpha']:.2f}", acc=f"{stats['accuracy']:.2f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                _checkpoint(run, out, step)
    finally:
        log.close()
        if run.rollouts.reader is not None:
            run.rollouts.reader.close()
    return _finish(run, out, echo)


class _NoLog:
    """Ranks other than 0 write no metrics."""

    def log(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _open_log(cfg: TrainConfig, out: Path, start: int, d: Dist) -> MetricsLog | _NoLog:
    logs = []

    def open_log() -> None:  # on rank 0; an error (say wandb missing) stops every rank
        logs.append(MetricsLog(out, resume_step=start or None, tensorboard=cfg.tensorboard,
                               wandb_project=cfg.wandb_project, run_name=out.name, config=to_dict(cfg)))

    d.from_main(open_log)
    return logs[0] if logs else _NoLog()


def _checkpoint(run: Run, out: Path, step: int) -> None:
    cfg, d, learner = run.cfg, run.dist, run.learner
    state = {"online_tokens": run.online_tokens, "seed": cfg.seed, "world_size": d.world_size,
             "data_order": {"prompts": len(run.rollouts.problems), "per_step": cfg.prompts_per_step}}
    model_state, optimizer_state = gathered_states(learner.model, learner.optimizer, d)
    path = d.from_main(lambda: ckpt.save_checkpoint(out, step=step, model=learner.model, optimizer=learner.optimizer,
                                                    state=state, keep=cfg.keep_checkpoints, model_state=model_state,
                                                    optimizer_state=optimizer_state))
    run.last_checkpoint = str(path)


def _restore(run: Run, path: Path) -> dict:
    """Load a checkpoint into every rank (the same world size only)."""
    d, learner = run.dist, run.learner
    tensors, optimizer_state, state = ckpt.read_checkpoint(path)
    saved = state.get("world_size", 1)
    if saved != d.world_size:
        raise UserError(f"{path}: written by a run of {saved} process(es), this one has {d.world_size}; resume with "
                        f"the same number (torchrun --nproc-per-node) or start a fresh out_dir")
    if d.fsdp:
        ckpt.check_keys(*load_full_states(learner.model, learner.optimizer, tensors, optimizer_state))
    else:
        ckpt.load_weights(learner.model, tensors)
        learner.optimizer.load_state_dict(optimizer_state)
    ckpt.set_rng_states(state["rng"])
    run.rollouts.engine.sync_weights(learner.model)  # a separate engine was built with the initial weights
    return state


def _claim_out_dir(cfg: TrainConfig, out: Path, resume: bool, *, write: bool = True) -> None:
    saved = out / "config.json"
    mine = to_dict(cfg)
    if saved.exists():
        # keys added since the run started count as their defaults
        theirs = {**to_dict(TrainConfig()), **json.loads(saved.read_text())}
        if not resume:
            raise UserError(f"{out}: already holds a run; pass --resume to continue it or set out_dir elsewhere")
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k) and k not in RESUMABLE_CHANGES)
        if diff:
            raise UserError(f"{saved}: the run was started with different settings ({', '.join(diff)}); resume with "
                            "the same settings or set out_dir elsewhere")
    if not write:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".config.json.tmp"
        tmp.write_text(json.dumps(mine, indent=1))
        tmp.replace(saved)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the run here ({exc}); set out_dir to a writable directory or free "
                        "space") from None


def _finish(run: Run, out: Path, echo: Callable[[str], None]) -> dict:
    model_state, _ = gathered_states(run.learner.model, None, run.dist)
    summary = run.dist.from_main(lambda: _write_outputs(run, out, model_state))
    echo(f"trained {run.cfg.steps} steps, {run.online_tokens} online tokens; model in {out / 'model'}")
    return summary


def _write_outputs(run: Run, out: Path, model_state: dict | None) -> dict:
    from stage2_train.metrics import read_jsonl

    model_dir = out / "model"
    run.learner.model.save_pretrained(model_dir, safe_serialization=True,
                                      **({} if model_state is None else {"state_dict": model_state}))
    run.learner.tokenizer.save_pretrained(model_dir)
    records = read_jsonl(out / "metrics.jsonl")
    final = [r for r in records if any(k.startswith("eval/") for k in r)]
    summary = {"steps": run.cfg.steps, "online_tokens": run.online_tokens,
               "final": {k: v for k, v in (final[-1] if final else {}).items() if k.startswith("eval/")},
               "seconds_per_step": float(np.mean([r["time/step"] for r in records if "time/step" in r] or [math.nan]))}
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    return summary
