"""One training step, in the order of the paper's Algorithm 1 (METHOD §2), and where each line is:

    α_i ← schedule(i)                                               alpha_at
    per prompt G_w = ⌈α_i·G⌉ bank rows, G_s = G − G_w online        collect → groups.plan_groups
    sample the G_s online responses; score them                     collect → _sample_online
    read the bank rows (re-scored if another verifier filled it)    collect → _read_bank
    assemble the groups of G, bank members first                    collect → rollout.assemble
    Â over each group (std with Bessel's correction)                update → rl_math
    old log-probs (and reference log-probs) for all G               update → _old_and_reference
    PPO epochs: PPO-clip + dual clip + k3 KL, token-mean → AdamW    update → ppo.ppo_epochs

`train_step` runs one step; `collect` builds the groups, `update` optimises on them.
Variants are chosen once, each a small function: the mixing scheme (`SCHEMES`: the
paper's `mixed_step`, or the released code's `alternating_step`, METHOD §3), rescue
(`_rescue`: the learner's own group of G first, then the plan), and the loss's bank
correction (`rl_math.BANK_CORRECTIONS`). Under torchrun each rank collects and trains on
its block of the step's prompts and the step's update is the single-process one
(stage2_train.distributed says how).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.bank.for_training import PromptMismatch
from pipeline.engines import SamplingParams
from stage2_train import rl_math
from stage2_train.config import TrainConfig, alpha_at
from stage2_train.context import Run
from stage2_train.distributed import Dist
from stage2_train.groups import BankPrompts, GroupPlan, Mixing, alternating_sizes, plan_groups
from stage2_train.policy import Packed, has_dropout, pack
from stage2_train.ppo import LossInputs, OldLogprobs, TrainingDiverged, local_rows, ppo_epochs, stopped_note
from stage2_train.rollout import Response, assemble, bank_responses, online_responses, sample_online, step_seed
from stage2_train.step_stats import Timer, gather_responses, merge_alternating, reduce_sums, step_stats


def batch_prompts(num_prompts: int, per_step: int, step: int, seed: int) -> list[int]:
    """Prompt indices of 1-based `step`: consecutive slices of per-epoch permutations."""
    out: list[int] = []
    start = (step - 1) * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), num_prompts)
        perm = np.random.default_rng(step_seed(seed, epoch, "epoch")).permutation(num_prompts)
        out.extend(perm[offset : offset + per_step - len(out)].tolist())
    return out


def train_step(run: Run, step: int) -> dict:
    """Algorithm 1, one step (METHOD §2), or the released code's alternating pair of phases;
    then the rollout engine takes the new weights."""
    cfg, timer = run.cfg, Timer()
    t0 = time.perf_counter()
    alpha = alpha_at(cfg, step)
    prompts = batch_prompts(len(run.rollouts.problems), cfg.prompts_per_step, step, cfg.seed)
    stats, generated = SCHEMES[cfg.mixing](run, step, prompts, alpha, timer)
    run.online_tokens += generated
    with timer("sync"):
        run.rollouts.engine.sync_weights(run.learner.model)
    stats.update({"alpha": alpha, "lr": run.learner.optimizer.param_groups[0]["lr"],
                  "online_tokens": run.online_tokens, **{f"time/{k}": v for k, v in timer.seconds.items()},
                  "time/step": time.perf_counter() - t0})
    return stats


def mixed_step(run: Run, step: int, prompts: list[int], alpha: float, timer: Timer) -> tuple[dict, int]:
    """The paper's step: groups of G mixing ⌈αG⌉ bank rows with online responses, one update.
    Returns the stats and the tokens generated on all ranks."""
    collected = collect(run, step, prompts, alpha=alpha, group_size=run.cfg.group_size, timer=timer)
    prefetch_bank(run, step + 1)
    return update(run, collected, step, timer), collected.generated_tokens_all_ranks


def alternating_step(run: Run, step: int, prompts: list[int], alpha: float, timer: Timer) -> tuple[dict, int]:
    """Bank-only groups of ⌈αG⌉ then online-only groups of ⌈(1−α)G⌉ on the next prompts,
    one optimizer pass each (METHOD §3); reported stats are the online phase's plus bank counts."""
    cfg = run.cfg
    bank_size, online_size = alternating_sizes(alpha, cfg.group_size)
    generated, bank_stats, online_stats = 0, {}, {}
    if bank_size > 0:
        collected = collect(run, step, prompts, alpha=1.0, group_size=bank_size, timer=timer, phase="-bank")
        prefetch_bank(run, step + 1)
        bank_stats = update(run, collected, step, timer)
        generated += collected.generated_tokens_all_ranks
        prompts = batch_prompts(len(run.rollouts.problems), cfg.prompts_per_step, step + cfg.steps, cfg.seed)
        if online_size > 0:  # a separate engine samples the online phase with the bank phase's update
            with timer("sync"):
                run.rollouts.engine.sync_weights(run.learner.model)
    if online_size > 0:
        collected = collect(run, step, prompts, alpha=0.0, group_size=online_size, timer=timer, phase="-online")
        online_stats = update(run, collected, step, timer)
        generated += collected.generated_tokens_all_ranks
    return merge_alternating(bank_stats, online_stats, bank_size, online_size, generated), generated


SCHEMES: dict[Mixing, Callable[[Run, int, list[int], float, Timer], tuple[dict, int]]] = {
    Mixing.MIXED: mixed_step, Mixing.ALTERNATING: alternating_step}


def prefetch_bank(run: Run, step: int) -> None:
    """Decode, in the background, the bank row groups of `step`'s prompts (this rank's
    block) while the current step trains: the step's own read then hits the cache."""
    cfg, ro = run.cfg, run.rollouts
    if ro.reader is None or step > cfg.steps or alpha_at(cfg, step) <= 0:
        return
    prompts = batch_prompts(len(ro.problems), cfg.prompts_per_step, step, cfg.seed)
    ids = [ro.problems[prompts[i]].id for i in run.dist.rollout_range(len(prompts))]
    rows = [ro.pool[pid] for pid in ids if pid in ro.pool]
    if rows:
        ro.reader.prefetch(np.concatenate(rows))


# --- collect: plan, sample, read, assemble ------------------------------------------------


@dataclass
class Collected:
    responses: list[Response]  # this rank's groups, group-major (all groups in one process)
    group_size: int
    generated_tokens_all_ranks: int  # every token the learner generated this step on all ranks, discarded included
    offset: int  # index of this rank's first response among all ranks' responses
    total: int  # responses on all ranks


@dataclass(frozen=True)
class _Block:
    """This rank's block of the step's prompts: ids (for messages), token ids, gold answers."""

    names: list[str]
    ids: list[list[int]]
    golds: list[str]


def collect(run: Run, step: int, prompts: list[int], *, alpha: float, group_size: int, timer: Timer,
            phase: str = "") -> Collected:
    """Groups of `group_size` mixing ⌈α·size⌉ bank rows with online responses (the paper's
    mixed group at size G; the alternating scheme's bank-only phase is α = 1 at size
    ⌈α·G⌉ and its online-only phase α = 0 at size ⌈(1−α)·G⌉). The groups of all prompts
    are planned with one rng; this rank samples and reads only its block's."""
    cfg, g, d, ro = run.cfg, group_size, run.dist, run.rollouts
    mine = d.rollout_range(len(prompts))
    block = _Block([ro.problems[prompts[i]].id for i in mine], [ro.prompt_ids[prompts[i]] for i in mine],
                   [ro.problems[prompts[i]].answer for i in mine])
    pids = [ro.problems[i].id for i in prompts]
    rng = np.random.default_rng(step_seed(cfg.seed, step, "bank" + phase))
    params = sampling(cfg, step, phase, group=d.rank // d.tp)
    if cfg.bank_prompts is BankPrompts.RESCUE and alpha > 0:
        plan, online = _rescue(run, pids, block, alpha=alpha, group_size=g, rng=rng, params=params, timer=timer)
    else:
        with timer("plan"):
            plan = plan_groups(pids, ro.pool, alpha=alpha, group_size=g, rng=rng)
        online = _sample_online(run, block, plan.online[mine.start : mine.stop], params, timer)
    bank_rows, keep_online = plan.bank_rows[mine.start : mine.stop], plan.online[mine.start : mine.stop]
    with timer("bank"):
        bank = _read_bank(run, bank_rows, block)
    tokens = sum(len(r.token_ids) for grp in online for r in grp)
    tokens = int(d.sum(tokens if d.generation_leader else 0))
    groups = assemble(bank, online, keep_online=keep_online, group_size=g)
    train = d.train_range(len(prompts))  # a generation group's ranks split its prompts for training
    local = groups[(train.start - mine.start) * g : (train.stop - mine.start) * g]
    return Collected(local, g, tokens, offset=train.start * g, total=len(prompts) * g)


def _rescue(run: Run, pids: list[str], block: _Block, *, alpha: float, group_size: int, rng: np.random.Generator,
            params: SamplingParams, timer: Timer) -> tuple[GroupPlan, list[list[Response]]]:
    """Rescue: the learner's own full group of G for every prompt first; only prompts where
    all G failed receive ⌈αG⌉ bank rows, which replace that many of the failures."""
    online = _sample_online(run, block, [group_size] * len(block.ids), params, timer)
    with timer("plan"):
        all_wrong = _from_generation_groups(run.dist, [not any(r.correct for r in grp) for grp in online])
        plan = plan_groups(pids, run.rollouts.pool, alpha=alpha, group_size=group_size, rng=rng,
                           prompts=BankPrompts.RESCUE, online_all_wrong=all_wrong)
    return plan, online


def _sample_online(run: Run, block: _Block, counts: Sequence[int], params: SamplingParams,
                   timer: Timer) -> list[list[Response]]:
    """`counts[p]` responses of the learner to prompt p of the block, scored."""
    ro = run.rollouts
    with timer("generate"):
        completions = sample_online(ro.engine, block.ids, counts, params)
    with timer("score"):
        return online_responses(completions, block.ids, block.golds, ro.scorer,
                                truncated_reward=run.cfg.truncated_reward)


def _read_bank(run: Run, rows: Sequence[np.ndarray], block: _Block) -> list[list[Response]]:
    """The planned bank rows of the block; a row whose prompt ids are not the learner's
    stops every rank, not only the one that read it."""
    cfg, ro, mismatch = run.cfg, run.rollouts, None
    try:
        bank = bank_responses(ro.reader, rows, block.ids, block.golds, names=block.names, bank=str(cfg.bank),
                              rescore=ro.rescorer, truncated_reward=cfg.truncated_reward)
    except PromptMismatch as exc:
        mismatch = exc
    if run.dist.any(mismatch is not None):
        raise mismatch or PromptMismatch(f"{cfg.bank}: a bank row read on another rank stores other prompt "
                                         "ids than the learner's; re-run `s2lpo explore` with the learner's "
                                         "tokenizer and template")
    return bank


def _from_generation_groups(d: Dist, values: list) -> list:
    """Per-prompt values of every generation group, in prompt order."""
    return [v for rank, part in enumerate(d.gather(values)) if rank % d.tp == 0 for v in part]


def sampling(cfg: TrainConfig, step: int, phase: str = "", *, group: int = 0) -> SamplingParams:
    """Online sampling of one step; generation group k > 0 (a torchrun rank) gets its own seed."""
    purpose = "online" + phase + (f"@{group}" if group else "")
    return cfg.sampling_params(seed=step_seed(cfg.seed, step, purpose))


# --- update: advantages, old/reference log-probs, PPO epochs ------------------------------


def update(run: Run, collected: Collected, step: int, timer: Timer) -> dict:
    """Sampling is over (the engine is released, the learner in training mode): rewards →
    group advantages, old/reference log-probs, the bank correction's terms, then PPO epochs
    of mini-batch AdamW steps."""
    cfg, lc, d, learner = run.cfg, run.cfg.loss, run.dist, run.learner
    run.rollouts.engine.release()
    learner.train_model.train()
    responses, g, n = collected.responses, collected.group_size, len(collected.responses)
    cpu_batch = pack(responses, learner.tokenizer.pad_token_id)
    rewards = torch.tensor([r.reward for r in responses]).view(n // g, g)
    _check_rewards(run, responses, step)
    online = (~cpu_batch.from_bank).view(n // g, g)
    adv = rl_math.compute_group_advantages(rewards, baseline_mask=rl_math.baseline_mask(lc.baseline, online),
                                           normalize_std=lc.normalize_std).flatten()
    batch = cpu_batch.to(d.device)
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, "minibatch"))
    orders = [torch.randperm(collected.total, generator=gen) for _ in range(cfg.ppo_epochs)]  # the same on every rank
    correction = rl_math.BANK_CORRECTIONS[lc.bank_correction]
    with timer("logprobs"):
        old, ref = _old_and_reference(run, batch, orders[0], collected.offset, every_old=correction.needs_old_logprobs)
    terms = correction.terms(old.full() if correction.needs_old_logprobs else None, batch.explorer_logprobs,
                             batch.from_bank, batch.response_mask, cap=lc.is_cap)
    inputs = LossInputs(batch, torch.arange(n), old, adv.to(d.device), ref, terms.token_weights, terms.shaped)
    sums = ppo_epochs(run, inputs, orders, offset=collected.offset, step=step, timer=timer)
    return step_stats(gather_responses(d, responses, rewards, adv), reduce_sums(d, sums),
                      collected.generated_tokens_all_ranks)


def _old_and_reference(run: Run, batch: Packed, first_order: torch.Tensor, offset: int, *,
                       every_old: bool) -> tuple[OldLogprobs, torch.Tensor | None]:
    """π_old of every row (the first mini-batch's rows left pending, unless `every_old` is
    needed up front or dropout makes the training forward differ from π_old), and π_ref
    when the loss has a KL term."""
    cfg, d, learner = run.cfg, run.dist, run.learner
    n = batch.input_ids.shape[0]
    pending = None
    if not every_old and not has_dropout(learner.model):
        pending = _first_update_rows(first_order[: cfg.mini_batch_size], offset, n)
    calls = old_calls = 0  # under FSDP every rank runs as many forwards as the busiest one
    if d.fsdp:
        calls = d.max(math.ceil(n / cfg.micro_batch_size))
        old_calls = d.max(math.ceil((n if pending is None else int((~pending).sum())) / cfg.micro_batch_size))
    old = OldLogprobs.compute(learner.model, batch, cfg.micro_batch_size, pending=pending, calls=old_calls)
    ref = learner.reference_logprobs(batch, cfg.micro_batch_size, calls=calls) if cfg.loss.kl_coef > 0 else None
    return old, ref


def _first_update_rows(first: torch.Tensor, offset: int, n: int) -> torch.Tensor:
    """(n,) bool: this rank's rows in the step's first mini-batch. Their old log-probs are
    the first update's own forward, detached (the weights have not moved yet), so the
    no-grad pass skips them (`OldLogprobs` caches that forward for later epochs): exact,
    and on CPU bit-identical to computing them apart."""
    first_rows = torch.zeros(n, dtype=torch.bool)
    first_rows[local_rows(first, offset, n)] = True
    return first_rows


def _check_rewards(run: Run, responses: list[Response], step: int) -> None:
    """Non-finite rewards (a verifier or a bank gone wrong) stop the run before any update uses them."""
    bad = [r for r in responses if not np.isfinite(r.reward)]
    if run.dist.any(bool(bad)):
        source = "bank" if bad and bad[0].from_bank else "verifier"
        what = (f"{len(bad)} of {len(responses)} rewards are not finite (e.g. {bad[0].reward}, from the {source})"
                if bad else "a reward on another rank is not finite")
        fix = "Repair the bank's reward column" if source == "bank" else "Fix the verifier"
        raise TrainingDiverged(f"step {step}: {what}; {stopped_note(run.last_checkpoint, fix)}")
