"""`s2lpo train`: the run around the step — setup, the step loop, evaluation, checkpoints.

Setup refuses, in one line each: a learner whose tokenizer or prompt template differs
from the bank's explorer's, a bank that holds none of the training prompts, and an
out_dir that already holds a different run. The loop draws the prompts of step i from
a per-epoch permutation fixed by the seed, so a resumed run sees the same data.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.config import to_dict
from pipeline.data import load_problems
from pipeline.errors import UserError
from stage2_train import checkpoint as ckpt
from stage2_train.config import TrainConfig, alpha_at
from stage2_train.distributed import Dist, gathered_states, init_distributed, load_full_states, prepare_models
from stage2_train.groups import Mixing, alternating_sizes, eligible_pool
from stage2_train.metrics import MetricsLog
from stage2_train.rollout import step_seed
from stage2_train.schedule import bank_count
from stage2_train.step import Timer, collect, update

# settings a resumed run may change (they do not alter what the steps compute); batch_size is
# generate_batch_size's name in the config.json of runs started before the rename
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "tensorboard", "wandb_project", "threads",
                     "scoring_workers", "score_timeout_s", "generate_batch_size", "batch_size", "gpus"}


def batch_prompts(num_prompts: int, per_step: int, step: int, seed: int) -> list[int]:
    """Prompt indices of 1-based `step`: consecutive slices of per-epoch permutations."""
    out: list[int] = []
    start = (step - 1) * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), num_prompts)
        perm = np.random.default_rng(step_seed(seed, epoch, "epoch")).permutation(num_prompts)
        out.extend(perm[offset : offset + per_step - len(out)].tolist())
    return out


@dataclass
class Run:
    """Everything a step needs; built by `setup`."""

    cfg: TrainConfig
    tokenizer: object
    model: object
    trainable: list
    optimizer: object
    engine: object
    scorer: object
    problems: list
    prompt_token_ids: list
    reader: object = None
    pool: dict = field(default_factory=dict)
    bank_rescorer: object = None
    ref_model: object = None
    dist: Dist = field(default_factory=Dist)
    train_model: object = None  # what the loss runs through: the learner, or its DDP wrapper
    online_tokens: int = 0
    last_checkpoint: str | None = None

    def reference_logprobs(self, batch, calls: int = 0):
        from stage2_train.policy import batched_logprobs

        if self.ref_model is not None:
            return batched_logprobs(self.ref_model, batch, self.cfg.micro_batch_size, calls=calls)
        with self.model.disable_adapter():  # LoRA: the reference is the base model
            return batched_logprobs(self.model, batch, self.cfg.micro_batch_size, calls=calls)

    def last_checkpoint_note(self, fix: str = "Lower lr or grad_clip") -> str:
        where = self.last_checkpoint or "none yet (the run starts from the initial learner)"
        return f"the run stopped without applying it; last good checkpoint: {where}. {fix} and resume with --resume"


def run_train(cfg: TrainConfig, *, resume: bool = False, echo=print, progress: bool = True) -> dict:
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


def _train(cfg: TrainConfig, d: Dist, resume: bool, echo, progress: bool) -> dict:
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
    evaluator = Evaluator(cfg, run)
    _prefetch_bank(run, start + 1)  # decoded while step `start` is evaluated
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
        if run.reader is not None:
            run.reader.close()
    return _finish(run, out, echo)


class _NoLog:
    """Ranks other than 0 write no metrics."""

    def log(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _open_log(cfg: TrainConfig, out: Path, start: int, d: Dist):
    logs = []

    def open_log() -> None:  # on rank 0; an error (say wandb missing) stops every rank
        logs.append(MetricsLog(out, resume_step=start or None, tensorboard=cfg.tensorboard,
                               wandb_project=cfg.wandb_project, run_name=out.name, config=to_dict(cfg)))

    d.from_main(open_log)
    return logs[0] if logs else _NoLog()


def _checkpoint(run: Run, out: Path, step: int) -> None:
    cfg, d = run.cfg, run.dist
    state = {"online_tokens": run.online_tokens, "seed": cfg.seed, "world_size": d.world_size,
             "data_order": {"prompts": len(run.problems), "per_step": cfg.prompts_per_step}}
    model_state, optimizer_state = gathered_states(run.model, run.optimizer, d)
    path = d.from_main(lambda: ckpt.save_checkpoint(out, step=step, model=run.model, optimizer=run.optimizer,
                                                    state=state, keep=cfg.keep_checkpoints, model_state=model_state,
                                                    optimizer_state=optimizer_state))
    run.last_checkpoint = str(path)


def _restore(run: Run, path: Path) -> dict:
    """Load a checkpoint into every rank (the same world size only)."""
    d = run.dist
    tensors, optimizer_state, state = ckpt.read_checkpoint(path)
    saved = state.get("world_size", 1)
    if saved != d.world_size:
        raise UserError(f"{path}: written by a run of {saved} process(es), this one has {d.world_size}; resume with "
                        f"the same number (torchrun --nproc-per-node) or start a fresh out_dir")
    if d.fsdp:
        ckpt.check_keys(*load_full_states(run.model, run.optimizer, tensors, optimizer_state))
    else:
        ckpt.load_weights(run.model, tensors)
        run.optimizer.load_state_dict(optimizer_state)
    ckpt.set_rng_states(state["rng"])
    _sync_engine(run)  # a separate engine was built with the initial weights
    return state


def train_step(run: Run, step: int) -> dict:
    """Algorithm 1, one step (METHOD §2), or the released code's alternating pair of steps."""
    cfg, timer = run.cfg, Timer()
    t0 = time.perf_counter()
    alpha = alpha_at(cfg, step)
    prompts = batch_prompts(len(run.problems), cfg.prompts_per_step, step, cfg.seed)
    if cfg.mixing is Mixing.MIXED:
        collected = collect(run, step, prompts, alpha=alpha, group_size=cfg.group_size, timer=timer)
        _prefetch_bank(run, step + 1)
        _release_engine(run)
        run.train_model.train()
        stats = update(run, collected, step, timer)
        online_tokens = collected.online_tokens
    else:
        stats, online_tokens = _alternating(run, step, prompts, alpha, timer)
    run.online_tokens += online_tokens
    with timer("sync"):
        _sync_engine(run)
    stats.update({"alpha": alpha, "lr": run.optimizer.param_groups[0]["lr"], "online_tokens": run.online_tokens,
                  **{f"time/{k}": v for k, v in timer.seconds.items()}, "time/step": time.perf_counter() - t0})
    return stats


def _prefetch_bank(run: Run, step: int) -> None:
    """Decode, in the background, the bank row groups of `step`'s prompts (this rank's
    block) while the current step trains: the step's own read then hits the cache."""
    cfg = run.cfg
    if run.reader is None or step > cfg.steps or alpha_at(cfg, step) <= 0:
        return
    prompts = batch_prompts(len(run.problems), cfg.prompts_per_step, step, cfg.seed)
    ids = [run.problems[prompts[i]].id for i in run.dist.rollout_range(len(prompts))]
    rows = [run.pool[pid] for pid in ids if pid in run.pool]
    if rows:
        run.reader.prefetch(np.concatenate(rows))


def _alternating(run: Run, step: int, prompts: list[int], alpha: float, timer: Timer) -> tuple[dict, int]:
    """Bank-only groups of ⌈αG⌉ then online-only groups of ⌈(1−α)G⌉ on the next prompts,
    one optimizer pass each (METHOD §3); reported stats are the online phase's plus bank counts."""
    cfg = run.cfg
    bank_size, online_size = alternating_sizes(alpha, cfg.group_size)
    tokens, bank_stats = 0, {}
    if bank_size > 0:
        collected = collect(run, step, prompts, alpha=1.0, group_size=bank_size, timer=timer, phase="-bank")
        _prefetch_bank(run, step + 1)
        _release_engine(run)
        run.train_model.train()
        bank_stats = update(run, collected, step, timer)
        tokens += collected.online_tokens
        prompts = batch_prompts(len(run.problems), cfg.prompts_per_step, step + cfg.steps, cfg.seed)
        if online_size > 0:  # a separate engine samples the online phase with the bank phase's update
            with timer("sync"):
                _sync_engine(run)
    stats = {}
    if online_size > 0:
        collected = collect(run, step, prompts, alpha=0.0, group_size=online_size, timer=timer, phase="-online")
        _release_engine(run)
        run.train_model.train()
        stats = update(run, collected, step, timer)
        tokens += collected.online_tokens
    merged = dict(stats or bank_stats)
    for key in ("bank/responses", "bank/reward", "bank/accuracy", "bank/length", "tokens/bank"):
        if key in bank_stats:
            merged[key] = bank_stats[key]
    merged["g_w"], merged["g_s"] = float(bank_size), float(online_size)
    merged["tokens/online_generated"] = tokens
    return merged, tokens


def _sync_engine(run: Run) -> None:
    """Push the learner's new weights into a separate inference engine (vLLM, or FSDP's
    whole copy); with FSDP every rank gathers the shards."""
    if hasattr(run.engine, "load_weights"):
        from stage2_train.models import merged_state_dict

        run.engine.load_weights(merged_state_dict(run.model, dtype=run.cfg.rollout_dtype))


def _release_engine(run: Run) -> None:
    """Sampling is over until the next sync: a colocated vLLM may sleep."""
    if hasattr(run.engine, "release"):
        run.engine.release()


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


def _finish(run: Run, out: Path, echo) -> dict:
    model_state, _ = gathered_states(run.model, None, run.dist)
    summary = run.dist.from_main(lambda: _write_outputs(run, out, model_state))
    echo(f"trained {run.cfg.steps} steps, {run.online_tokens} online tokens; model in {out / 'model'}")
    return summary


def _write_outputs(run: Run, out: Path, model_state: dict | None) -> dict:
    from stage2_train.metrics import read_jsonl

    model_dir = out / "model"
    run.model.save_pretrained(model_dir, safe_serialization=True,
                              **({} if model_state is None else {"state_dict": model_state}))
    run.tokenizer.save_pretrained(model_dir)
    records = read_jsonl(out / "metrics.jsonl")
    final = [r for r in records if any(k.startswith("eval/") for k in r)]
    summary = {"steps": run.cfg.steps, "online_tokens": run.online_tokens,
               "final": {k: v for k, v in (final[-1] if final else {}).items() if k.startswith("eval/")},
               "seconds_per_step": float(np.mean([r["time/step"] for r in records if "time/step" in r] or [math.nan]))}
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    return summary


def _check_bank_prompts(run: Run) -> None:
    """The first bank row of the first training prompt the bank holds: a bank whose prompts
    were tokenised another way is refused before the run writes anything (each step then
    checks the rows it draws)."""
    from stage2_train.rollout import check_prompt_ids

    for problem, ids in zip(run.problems, run.prompt_token_ids):
        rows = run.pool.get(problem.id)
        if rows is not None and len(rows):
            stored = run.reader.read([int(rows[0])]).column("prompt_token_ids").to_pylist()[0]
            check_prompt_ids(stored, ids, prompt=problem.id, row=int(rows[0]), bank=str(run.cfg.bank))
            return


def setup(cfg: TrainConfig, d: Dist = Dist(), *, echo=print) -> Run:
    from stage2_train.models import build_engine, load_learner, make_scorer, open_bank_for

    if d.world_size > cfg.prompts_per_step:
        raise UserError(f"prompts_per_step {cfg.prompts_per_step} is fewer than the {d.world_size} torchrun processes; "
                        "every rank needs at least one prompt (raise prompts_per_step or launch fewer processes)")
    problems = load_problems(cfg.prompts, split=cfg.split, layout=cfg.layout, question_field=cfg.question_field,
                             answer_field=cfg.answer_field, id_field=cfg.id_field, limit=cfg.limit)
    torch.manual_seed(cfg.seed)
    tokenizer, model, ref_model = load_learner(cfg)
    from pipeline.prompts import encode_prompts, render_problems

    texts = render_problems(tokenizer, problems, template=cfg.template)
    prompt_token_ids = encode_prompts(tokenizer, texts, template=cfg.template)
    if cfg.gradient_checkpointing:  # keeps one block's activations instead of all of them
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ds = cfg.distributed
    train_model, model, ref_model = prepare_models(model, ref_model, d, param_dtype=ds.param_dtype,
                                                   reshard_after_forward=ds.reshard_after_forward)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    run = Run(cfg, tokenizer, model, trainable, optimizer, build_engine(cfg, model, tokenizer, d), make_scorer(cfg),
              problems, prompt_token_ids, ref_model=ref_model, dist=d, train_model=train_model)
    if cfg.uses_bank or cfg.bank_pass_band is not None:
        run.reader, run.bank_rescorer = open_bank_for(cfg, tokenizer, problems, run.scorer, echo=echo)
        run.pool = eligible_pool(run.reader.pool, run.reader.correct, cfg.bank_rows)
        _check_bank_prompts(run)
    if cfg.bank_pass_band is not None:
        from stage2_train.difficulty import apply_pass_band

        apply_pass_band(run, cfg.bank_pass_band, echo=echo)
        if not cfg.uses_bank:  # GRPO on the band: the bank chose the prompts and is not read again
            run.reader.close()
            run.reader, run.bank_rescorer, run.pool = None, None, {}
    g_w = [bank_count(alpha_at(cfg, i), cfg.group_size) for i in range(1, cfg.steps + 1)]
    where = f" on {d.world_size} ranks ({d.strategy.value})" if d.active else ""
    echo(f"train: {len(run.problems)} prompts, {cfg.steps} steps × {cfg.prompts_per_step} prompts × G={cfg.group_size}"
         f"{where}; bank share G_w per step {g_w[:3]}…{g_w[-1:]}; "
         f"{sum(p.numel() for p in trainable):,} trainable parameters")
    return run
