"""The PPO epochs of a step: mini-batch AdamW steps over the step's rows (METHOD §2, last line).

`OldLogprobs` owns π_old of the step's rows; `LossInputs` carries every per-row input of
the loss (advantages, π_ref, the bank correction's terms), row-aligned; `ppo_epochs` walks
each epoch's mini-batches, accumulating gradients over micro-batches (`_micro_loss`:
PPO-clip + dual clip + k3 KL, aggregated with the mini-batch's normaliser). A non-finite
loss or gradient stops the run on every rank before the optimizer applies it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

import torch

from pipeline.errors import UserError
from stage2_train import rl_math
from stage2_train.config import LossConfig
from stage2_train.context import Run
from stage2_train.distributed import accumulating, clip_grad_norm
from stage2_train.policy import Packed, batched_logprobs, micro_batches, token_logprobs
from stage2_train.step_stats import Timer


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: the run stops before the optimizer applies it."""


def stopped_note(last_checkpoint: str | None, fix: str = "Lower lr or grad_clip") -> str:
    """The end of a TrainingDiverged message: where the run can resume from, and the fix."""
    where = last_checkpoint or "none yet (the run starts from the initial learner)"
    return f"the run stopped without applying it; last good checkpoint: {where}. {fix} and resume with --resume"


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
    def compute(cls, model: torch.nn.Module, batch: Packed, micro_batch_size: int, *,
                pending: torch.Tensor | None = None, calls: int = 0) -> "OldLogprobs":
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
        first = self.pending[rows]  # rows whose old log-probs this forward is
        self.values[rows[first], :width] = logp.detach()[first]
        self.pending[rows[first]] = False
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

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index.to(t.device)][:, :width]

        return LossInputs(batch, self.rows[index], self.old, self.adv[index.to(self.adv.device)], pick(self.ref),
                          pick(self.weights), pick(self.shaped))

    def zero_weight(self) -> "LossInputs":
        """The first row with its response mask zeroed: a micro-batch that adds nothing."""
        one = self.select(torch.arange(1))
        return dataclasses.replace(one, old=None, batch=dataclasses.replace(
            one.batch, response_mask=torch.zeros_like(one.batch.response_mask)))


def ppo_epochs(run: Run, inputs: LossInputs, orders: list[torch.Tensor], *, offset: int, step: int,
               timer: Timer) -> dict[str, float]:
    """One AdamW step per mini-batch of every epoch's `orders` (permutations of all ranks'
    rows; this rank's rows are offset .. offset + n); returns the summed loss statistics."""
    n = len(inputs.rows)
    sums: dict[str, float] = defaultdict(float)
    for order in orders:
        for mini in order.split(run.cfg.mini_batch_size):
            mine = local_rows(mini, offset, n)
            _optimizer_step(run, inputs.select(mine), inputs.zero_weight(), len(mini), sums, step, timer)
    return sums


def local_rows(rows: torch.Tensor, offset: int, n: int) -> torch.Tensor:
    """The global row indices that are this rank's (offset .. offset + n), as local indices."""
    return rows[(rows >= offset) & (rows < offset + n)] - offset


def _optimizer_step(run: Run, inputs: LossInputs, filler: LossInputs, rows: int, sums: dict[str, float], step: int,
                    timer: Timer) -> None:
    """One AdamW step on a mini-batch of `rows` responses over all ranks, `inputs` this
    rank's; gradients accumulate over micro-batches. A non-finite loss or gradient norm
    stops the run on every rank before the optimizer applies it."""
    cfg, lc, d, learner = run.cfg, run.cfg.loss, run.dist, run.learner
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
            with accumulating(learner.train_model, d, last=i == calls - 1):
                loss = _micro_loss(learner.train_model, part, lc, norm, sums)
                if bad is None and not torch.isfinite(loss):
                    bad = loss.item()
                (loss * d.world_size).backward()  # DDP and FSDP average gradients over ranks: undo it
    if d.any(bad is not None):
        learner.optimizer.zero_grad(set_to_none=True)
        what = "non-finite on another rank" if bad is None else bad
        raise TrainingDiverged(f"step {step}: the loss is {what}; {stopped_note(run.last_checkpoint)}")
    with timer("optimizer"):
        grad_norm = clip_grad_norm(learner.trainable, cfg.grad_clip)
        if not torch.isfinite(grad_norm):
            learner.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"step {step}: the gradient norm is {grad_norm.item()}; "
                                   f"{stopped_note(run.last_checkpoint)}")
        learner.optimizer.step()
        learner.optimizer.zero_grad(set_to_none=True)
    inputs.old.weights_moved()
    sums["grad_norm"] += float(grad_norm)
    sums["updates"] += 1


def _micro_loss(model: torch.nn.Module, part: LossInputs, lc: LossConfig, norm: float,
                sums: dict[str, float]) -> torch.Tensor:
    """PPO-clip (+ k3 KL) of one micro-batch through `model`, aggregated with the
    mini-batch's normaliser."""
    m = part.batch.response_mask
    logp, entropy = token_logprobs(model, part.batch, with_entropy=True)
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
