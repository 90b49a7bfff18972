"""One training step, in the order of the paper's Algorithm 1 (METHOD §2):

    α_i ← schedule(i);  per prompt G_w = ⌈α_i·G⌉ bank rows, G_s = G − G_w online
    score all G with one verifier → rewards
    old log-probs (and reference log-probs) from the learner for all G
    Â over the group → PPO-clip + dual clip + k3 KL, token-mean → AdamW (clip 1.0)

`collect` builds the groups; `update` is the optimisation on a list of groups. Under
torchrun each rank collects and trains on its block of the step's prompts and the step's
update is the single-process one (stage2_train.distributed says how).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.engines import SamplingParams
from pipeline.errors import UserError
from stage2_train import rl_math
from stage2_train.distributed import Dist, accumulating, clip_grad_norm
from stage2_train.groups import BankPrompts, plan_groups
from stage2_train.policy import Packed, batched_logprobs, has_dropout, micro_batches, pack, token_logprobs
from stage2_train.rollout import (PromptMismatch, Response, assemble, bank_responses, online_responses, sample_online,
                                  step_seed)


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: the run stops before the optimizer applies it."""


@dataclass
class Timer:
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] += time.perf_counter() - self.t

        return _Span()


@dataclass
class Collected:
    responses: list[Response]  # this rank's groups, group-major (all groups in one process)
    group_size: int
    online_tokens: int  # every token the learner generated this step on all ranks (including discarded ones)
    offset: int  # index of this rank's first response among all ranks' responses
    total: int  # responses on all ranks


def collect(run, step: int, prompts: list[int], *, alpha: float, group_size: int, timer: Timer,
            phase: str = "") -> Collected:
    """Groups of `group_size` mixing ⌈α·size⌉ bank rows with online responses (the paper's
    mixed group at size G; the alternating scheme's bank-only phase is α = 1 at size
    ⌈α·G⌉ and its online-only phase α = 0 at size ⌈(1−α)·G⌉). The groups of all prompts
    are planned with one rng; this rank samples and reads only its block's."""
    cfg, g, d = run.cfg, group_size, run.dist
    mine = d.rollout_range(len(prompts))
    pids = [run.problems[i].id for i in prompts]
    ids = [run.prompt_token_ids[prompts[i]] for i in mine]
    golds = [run.problems[prompts[i]].answer for i in mine]
    rng = np.random.default_rng(step_seed(cfg.seed, step, "bank" + phase))
    params = sampling(cfg, step, phase, group=d.rank // d.tp)
    rescue = cfg.bank_prompts is BankPrompts.RESCUE and alpha > 0
    with timer("generate"):
        if rescue:  # the learner's own full group decides which prompts need the explorer
            completions = sample_online(run.engine, ids, [g] * len(ids), params)
    with timer("score"):
        if rescue:
            online = online_responses(completions, ids, golds, run.scorer, truncated_reward=cfg.truncated_reward)
            all_wrong = _from_generation_groups(d, [not any(r.correct for r in grp) for grp in online])
            plan = plan_groups(pids, run.pool, alpha=alpha, group_size=g, rng=rng, prompts=cfg.bank_prompts,
                               online_all_wrong=all_wrong)
        else:
            plan = plan_groups(pids, run.pool, alpha=alpha, group_size=g, rng=rng)
    bank_rows, keep_online = plan.bank_rows[mine.start : mine.stop], plan.online[mine.start : mine.stop]
    if not rescue:
        with timer("generate"):
            completions = sample_online(run.engine, ids, keep_online, params)
        with timer("score"):
            online = online_responses(completions, ids, golds, run.scorer, truncated_reward=cfg.truncated_reward)
    with timer("bank"):
        mismatch = None
        try:
            bank = bank_responses(run.reader, bank_rows, ids, golds, names=[pids[i] for i in mine],
                                  bank=str(cfg.bank), rescore=run.bank_rescorer,
                                  truncated_reward=cfg.truncated_reward)
        except PromptMismatch as exc:  # every rank stops, not only the one that read the row
            mismatch = exc
        if d.any(mismatch is not None):
            raise mismatch or PromptMismatch(f"{cfg.bank}: a bank row read on another rank stores other prompt "
                                             "ids than the learner's; re-run `s2lpo explore` with the learner's "
                                             "tokenizer and template")
    tokens = sum(len(r.token_ids) for grp in online for r in grp)
    tokens = int(d.sum(tokens if d.generation_leader else 0))
    groups = assemble(bank, online, keep_online=keep_online, group_size=g)
    train = d.train_range(len(prompts))  # a generation group's ranks split its prompts for training
    local = groups[(train.start - mine.start) * g : (train.stop - mine.start) * g]
    return Collected(local, g, tokens, offset=train.start * g, total=len(prompts) * g)


def _from_generation_groups(d: Dist, values: list) -> list:
    """Per-prompt values of every generation group, in prompt order."""
    return [v for rank, part in enumerate(d.gather(values)) if rank % d.tp == 0 for v in part]


def sampling(cfg, step: int, phase: str = "", *, group: int = 0) -> SamplingParams:
    """Online sampling of one step; generation group k > 0 (a torchrun rank) gets its own seed."""
    purpose = "online" + phase + (f"@{group}" if group else "")
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          max_new_tokens=cfg.max_new_tokens, seed=step_seed(cfg.seed, step, purpose))


class OldLogprobs:
    """π_old of the step's rows (N, W−1): their one owner.

    `compute` runs the no-grad pass over every row but `pending` ones. A pending row is in
    the step's first mini-batch: its first training forward runs before any optimizer step,
    so that forward, detached, is its old log-prob exactly; `take` caches it then, and
    every later epoch reads the cached value (so later epochs clip against π_old, not
    against the moving policy). A pending row asked for after the weights moved is a bug."""

    def __init__(self, values: torch.Tensor, pending: torch.Tensor | None = None) -> None:
        self.values = values
        self.pending = None if pending is None or not pending.any() else pending.to(values.device).clone()
        self.moved = False

    @classmethod
    def compute(cls, model, batch: Packed, micro_batch_size: int, *, pending: torch.Tensor | None = None,
                calls: int = 0) -> "OldLogprobs":
        values = batched_logprobs(model, batch, micro_batch_size, skip=pending, calls=calls)
        return cls(values, pending)

    def full(self) -> torch.Tensor:
        """Every row's old log-probs (none may be pending)."""
        if self.pending is not None:
            raise RuntimeError("old log-probs of the first mini-batch are not computed yet")
        return self.values

    def take(self, rows: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """Old log-probs of local `rows`, aligned with this forward's `logp` (n, w); pending
        rows take `logp` detached and keep it."""
        rows = rows.to(self.values.device)
        width = logp.shape[1]
        if self.pending is None or not self.pending[rows].any():
            return self.values[rows, :width]
        if self.moved:
            raise RuntimeError("old log-probs of a first-mini-batch row were asked for after an optimizer step")
        fresh = self.pending[rows]
        self.values[rows[fresh], :width] = logp.detach()[fresh]
        self.pending[rows[fresh]] = False
        if not self.pending.any():
            self.pending = None
        return self.values[rows, :width]

    def weights_moved(self) -> None:
        self.moved = True


@dataclass(frozen=True)
class LossInputs:
    """Per-response inputs of the loss, row-aligned with `batch` (None = not used).
    `rows` are the rows' indices in the step's batch (what `old` is indexed by);
    `old` None means this forward's own log-probs (the zero-weight filler)."""

    batch: Packed
    rows: torch.Tensor
    old: OldLogprobs | None
    adv: torch.Tensor
    ref: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    shaped: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "LossInputs":
        """Rows `index`, every (n, W−1) tensor trimmed with the batch to their longest row."""
        batch = self.batch.select(index)
        width = batch.response_mask.shape[1]

        def pick(t):
            return None if t is None else t[index.to(t.device)][:, :width]

        return LossInputs(batch, self.rows[index], self.old, self.adv[index.to(self.adv.device)], pick(self.ref),
                          pick(self.weights), pick(self.shaped))

    def zero_weight(self) -> "LossInputs":
        """The first row with its response mask zeroed: a micro-batch that adds nothing."""
        one = self.select(torch.arange(1))
        return dataclasses.replace(one, old=None, batch=dataclasses.replace(
            one.batch, response_mask=torch.zeros_like(one.batch.response_mask)))


def update(run, collected: Collected, step: int, timer: Timer) -> dict:
    """Old/reference log-probs, advantages, then PPO epochs of mini-batch AdamW steps."""
    cfg, lc, d = run.cfg, run.cfg.loss, run.dist
    cpu_batch = pack(collected.responses, run.tokenizer.pad_token_id)
    n, g = len(collected.responses), collected.group_size
    rewards = torch.tensor([r.reward for r in collected.responses]).view(n // g, g)
    _check_rewards(run, collected.responses, step)
    online_members = (~cpu_batch.from_bank).view(n // g, g)
    adv = rl_math.compute_group_advantages(
        rewards, baseline_mask=online_members if lc.baseline is rl_math.Baseline.ONLINE else None,
        normalize_std=lc.normalize_std).flatten()
    batch = cpu_batch.to(d.device)
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, "minibatch"))
    orders = [torch.randperm(collected.total, generator=gen) for _ in range(cfg.ppo_epochs)]  # the same on every rank
    pending = None  # truncated IS needs every old log-prob up front; with dropout the training forward is not π_old
    if lc.bank_correction is not rl_math.BankCorrection.TRUNCATED_IS and not has_dropout(run.model):
        pending = _first_update_rows(orders[0][: cfg.mini_batch_size], collected.offset, n)
    calls = old_calls = 0  # under FSDP every rank runs as many forwards as the busiest one
    if d.fsdp:
        calls = d.max(math.ceil(n / cfg.micro_batch_size))
        old_calls = d.max(math.ceil((n if pending is None else int((~pending).sum())) / cfg.micro_batch_size))
    with timer("logprobs"):
        old = OldLogprobs.compute(run.model, batch, cfg.micro_batch_size, pending=pending, calls=old_calls)
        ref = run.reference_logprobs(batch, calls) if lc.kl_coef > 0 else None
    weights = shaped = None
    if lc.bank_correction is rl_math.BankCorrection.TRUNCATED_IS:
        weights = rl_math.compute_truncated_is_weights(old.full(), batch.explorer_logprobs, batch.from_bank,
                                                       cap=lc.is_cap)
    elif lc.bank_correction is rl_math.BankCorrection.LUFFY:
        shaped = batch.from_bank.unsqueeze(1).expand_as(batch.response_mask) & (batch.response_mask > 0)
    inputs = LossInputs(batch, torch.arange(n), old, adv.to(d.device), ref, weights, shaped)
    sums: dict[str, float] = defaultdict(float)
    for order in orders:
        for mini in order.split(cfg.mini_batch_size):
            mine = _local_rows(mini, collected.offset, n)
            _optimizer_step(run, inputs.select(mine), inputs.zero_weight(), len(mini), sums, step, timer)
    return _step_stats(_gather(d, collected.responses, rewards, adv), _reduce(d, sums), collected.online_tokens)


def _local_rows(rows: torch.Tensor, offset: int, n: int) -> torch.Tensor:
    """The global row indices that are this rank's (offset .. offset + n), as local indices."""
    return rows[(rows >= offset) & (rows < offset + n)] - offset


def _first_update_rows(first: torch.Tensor, offset: int, n: int) -> torch.Tensor:
    """(n,) bool: this rank's rows in the step's first mini-batch. Their old log-probs are
    the first update's own forward, detached (the weights have not moved yet), so the
    no-grad pass skips them (`OldLogprobs` caches that forward for later epochs): exact,
    and on CPU bit-identical to computing them apart."""
    fresh = torch.zeros(n, dtype=torch.bool)
    fresh[_local_rows(first, offset, n)] = True
    return fresh


def _check_rewards(run, responses: list[Response], step: int) -> None:
    """Non-finite rewards (a verifier or a bank gone wrong) stop the run before any update uses them."""
    bad = [r for r in responses if not np.isfinite(r.reward)]
    if run.dist.any(bool(bad)):
        source = "bank" if bad and bad[0].from_bank else "verifier"
        what = (f"{len(bad)} of {len(responses)} rewards are not finite (e.g. {bad[0].reward}, from the {source})"
                if bad else "a reward on another rank is not finite")
        fix = "Repair the bank's reward column" if source == "bank" else "Fix the verifier"
        raise TrainingDiverged(f"step {step}: {what}; {run.last_checkpoint_note(fix)}")


def _optimizer_step(run, inputs: LossInputs, filler: LossInputs, rows: int, sums: dict, step: int,
                    timer: Timer) -> None:
    """One AdamW step on a mini-batch of `rows` responses over all ranks, `inputs` this
    rank's; gradients accumulate over micro-batches. A non-finite loss or gradient norm
    stops the run on every rank before the optimizer applies it."""
    cfg, lc, d = run.cfg, run.cfg.loss, run.dist
    mask = inputs.batch.response_mask
    if d.active:  # the whole mini-batch's normaliser
        norm = rl_math.normaliser_from_counts(d.sum(float(mask.double().sum())), rows, lc.aggregation,
                                              max_len=cfg.max_new_tokens)
    else:
        norm = rl_math.loss_normaliser(mask, lc.aggregation, max_len=cfg.max_new_tokens)
    micros = micro_batches(inputs.batch.lengths, cfg.micro_batch_size)
    calls, bad = d.max(len(micros)), None  # DDP syncs on every rank's last backward, FSDP on each
    with timer("backward"):  # forward + backward of the loss
        for i in range(calls):
            part = inputs.select(micros[i]) if i < len(micros) else filler
            with accumulating(run.train_model, d, last=i == calls - 1):
                loss = _micro_loss(run, part, norm, sums)
                if bad is None and not torch.isfinite(loss):
                    bad = loss.item()
                (loss * d.world_size).backward()  # DDP and FSDP average gradients over ranks: undo it
    if d.any(bad is not None):
        run.optimizer.zero_grad(set_to_none=True)
        what = "non-finite on another rank" if bad is None else bad
        raise TrainingDiverged(f"step {step}: the loss is {what}; {run.last_checkpoint_note()}")
    with timer("optimizer"):
        grad_norm = clip_grad_norm(run.trainable, cfg.grad_clip)
        if not torch.isfinite(grad_norm):
            run.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"step {step}: the gradient norm is {grad_norm.item()}; "
                                   f"{run.last_checkpoint_note()}")
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    inputs.old.weights_moved()
    sums["grad_norm"] += float(grad_norm)
    sums["updates"] += 1


def _micro_loss(run, part: LossInputs, norm: float, sums: dict) -> torch.Tensor:
    """PPO-clip (+ k3 KL) of one micro-batch, aggregated with the mini-batch's normaliser."""
    lc = run.cfg.loss
    m = part.batch.response_mask
    logp, entropy = token_logprobs(run.train_model, part.batch, with_entropy=True)
    old = logp.detach() if part.old is None else part.old.take(part.rows, logp)
    pl = rl_math.compute_policy_loss(logp, old, part.adv, m, clip_low=lc.clip_low, clip_high=lc.clip_high,
                                     dual_clip=lc.dual_clip, token_weights=part.weights, shaped=part.shaped,
                                     shaping_gamma=lc.luffy_gamma)
    per_token = pl.loss
    if part.ref is not None:
        kl = rl_math.compute_k3_kl(logp, part.ref)
        per_token = per_token + lc.kl_coef * kl
        sums["kl"] += float((kl.detach() * m).sum())
    loss = rl_math.aggregate(per_token, m, lc.aggregation, normaliser=norm)
    tokens = float(m.sum())
    sums["tokens"] += tokens
    sums["loss"] += float(loss.detach())
    sums["entropy"] += float((entropy * m).sum())
    sums["clip"] += pl.clip_fraction * tokens
    sums["dual_clip"] += pl.dual_clip_fraction * tokens
    return loss


ADDITIVE = ("tokens", "loss", "entropy", "clip", "dual_clip", "kl")  # sums over ranks; grad_norm and updates agree


def _reduce(d: Dist, sums: dict) -> dict:
    if not d.active:
        return sums
    return dict(sums, **{k: d.sum(sums[k]) for k in ADDITIVE})


def _gather(d: Dist, responses: list[Response], rewards: torch.Tensor, adv: torch.Tensor) -> dict:
    """What the step's statistics need of every response, from all ranks in prompt order."""
    mine = {"reward": np.array([r.reward for r in responses], dtype=float),
            "correct": np.array([r.correct for r in responses], dtype=bool),
            "from_bank": np.array([r.from_bank for r in responses], dtype=bool),
            "length": np.array([len(r.token_ids) for r in responses], dtype=np.int64),
            "truncated": np.array([r.truncated for r in responses], dtype=bool),
            "rewards": rewards, "adv": adv}
    parts = d.gather(mine)
    return {k: (torch.cat if k in ("rewards", "adv") else np.concatenate)([p[k] for p in parts]) for k in mine}


def _step_stats(s: dict, sums: dict, online_tokens: int) -> dict:
    rewards, adv, bank = s["rewards"], s["adv"], s["from_bank"]
    groups = rewards.shape[0]
    tokens = max(sums["tokens"], 1.0)
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values
    stats = {
        "groups": groups, "g_w": int(bank.sum()) / groups, "g_s": int((~bank).sum()) / groups,
        "reward": float(rewards.mean()), "accuracy": float(np.mean(s["correct"])),
        "adv/mean": float(adv.mean()), "adv/std": float(adv.std()) if adv.numel() > 1 else 0.0,
        "adv/abs_max": float(adv.abs().max()), "zero_variance_groups": float((spread == 0).float().mean()),
        "loss": sums["loss"] / max(sums["updates"], 1), "kl": sums["kl"] / tokens, "entropy": sums["entropy"] / tokens,
        "clip_fraction": sums["clip"] / tokens, "dual_clip_fraction": sums["dual_clip"] / tokens,
        "grad_norm": sums["grad_norm"] / max(sums["updates"], 1), "updates": int(sums["updates"]),
        "tokens/online_generated": online_tokens,
        "tokens/bank": int(s["length"][bank].sum()), "tokens/online": int(s["length"][~bank].sum()),
        "truncated": float(np.mean(s["truncated"])),
    }
    for name, part in (("bank", bank), ("online", ~bank)):
        stats[f"{name}/responses"] = int(part.sum())
        stats[f"{name}/reward"] = float(np.mean(s["reward"][part])) if part.any() else None
        stats[f"{name}/accuracy"] = float(np.mean(s["correct"][part])) if part.any() else None
        stats[f"{name}/length"] = float(np.mean(s["length"][part])) if part.any() else None
    return stats
