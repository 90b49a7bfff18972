"""The RL math of S2L-PO: group advantages, policy losses, KL and loss aggregation.

Pure tensor functions (torch only), each named `compute_<thing>` and selected through
an Enum, each tested on hand-computed tensors. Shapes: P prompts, G responses per
prompt (a *group*), N = P·G responses flattened group-major, T response tokens (right
padded; `mask` is 1 on real tokens).

How the defaults follow the paper (METHOD §2) and where the options come from:
- advantage: Â_j = (R_j − mean R)/(std R + ε) over the *whole mixed group* (bank and
  online responses alike), std with Bessel's correction (ddof = 1), ε = 1e-6. Options:
  the baseline over on-policy responses only (LUFFY, Yan et al. 2025); no std division
  (Dr.GRPO, Liu et al. 2025: the std divisor up-weights near-uniform groups).
- policy loss: PPO-clip (Schulman et al. 2017) with ε_low = ε_high = 0.2 and dual clip
  c = 3 for Â < 0 (Ye et al. 2020); ε_high > ε_low is DAPO's clip-higher (Yu et al. 2025).
- bank-token correction: none (paper: old log-probs are recomputed by the learner, so
  the objective is exactly GRPO's); a truncated importance weight min(π_old/π_explorer, C)
  (truncated IS, Ionides 2008 / IMPALA-style truncation); LUFFY's policy shaping
  f(π) = π/(π+γ) in place of the clipped ratio (Yan et al. 2025). `BANK_CORRECTIONS`
  maps each to its `compute_bank_terms_<variant>` (the extra inputs of the policy loss):
  a new variant is one function and one entry there.
- KL: k3 estimator exp(r) − r − 1 with r = log π_ref − log π_θ (Schulman 2020), ≥ 0.
- aggregation: token-mean (paper, DAPO), sequence-mean (original GRPO), or Dr.GRPO's
  constant normaliser (sum over tokens / (N · max_len)).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


class Baseline(enum.Enum):
    GROUP = "group"  # whole mixed group (paper)
    ONLINE = "online"  # on-policy responses only (LUFFY)


class Aggregation(enum.Enum):
    TOKEN_MEAN = "token-mean"  # paper, DAPO
    SEQUENCE_MEAN = "sequence-mean"  # original GRPO
    CONSTANT = "constant"  # Dr.GRPO: sum / (N · max_len)


class BankCorrection(enum.Enum):
    NONE = "none"  # paper
    TRUNCATED_IS = "truncated-is"  # weight bank tokens by min(π_old/π_explorer, C)
    LUFFY = "luffy"  # policy shaping f(π) = π/(π+γ) on bank tokens


def baseline_mask(baseline: Baseline, online: Tensor) -> Tensor | None:
    """The `baseline_mask` of `compute_group_advantages` for `baseline`; `online` (P, G) is
    True on on-policy members. None = the whole group."""
    return online if baseline is Baseline.ONLINE else None


def compute_group_advantages(rewards: Tensor, *, baseline_mask: Tensor | None = None,
                             normalize_std: bool = True, eps: float = 1e-6, ddof: int = 1) -> Tensor:
    """Per-response advantages, shape (P, G) → (P, G).

    mean and std are taken over the members of each group where `baseline_mask` is True
    (default: all). Conventions, all deliberate:
    - a group whose baseline has no members falls back to the whole group (α = 1 with
      an on-policy baseline: there are no on-policy responses yet);
    - the std divisor is used only when the baseline has ≥ ddof+1 members and a
      non-zero std; otherwise the advantage is R − mean (no division). With the whole
      group as baseline, equal rewards then give Â = 0 as in GRPO; with an on-policy
      baseline whose rewards are all equal, a differing bank reward keeps a ±1-scale
      advantage instead of one blown up by 1/ε.
    """
    rewards = rewards.float()
    member = torch.ones_like(rewards, dtype=torch.bool) if baseline_mask is None else baseline_mask.bool()
    member = torch.where(member.any(dim=1, keepdim=True), member, torch.ones_like(member))
    w = member.float()
    count = w.sum(dim=1, keepdim=True)
    mean = (rewards * w).sum(dim=1, keepdim=True) / count
    centred = rewards - mean
    if not normalize_std:
        return centred
    var = ((centred * w) ** 2).sum(dim=1, keepdim=True) / (count - ddof).clamp(min=1)
    std = var.sqrt()
    usable = (count > ddof) & (std > 0)
    return torch.where(usable, centred / (std + eps), centred)


def compute_k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimate of KL(π_θ‖π_ref) per token: exp(r) − r − 1, r = log π_ref − log π_θ.
    Unbiased for samples from π_θ and never negative. Shape (N, T) → (N, T)."""
    r = (ref_logp - logp).clamp(-20.0, 20.0)  # exp overflow guard; |r| > 20 is already a disaster
    return torch.exp(r) - r - 1.0


@dataclass(frozen=True)
class PolicyLoss:
    """Per-token loss (N, T) and diagnostics (floats over masked tokens)."""

    loss: Tensor
    clip_fraction: float
    dual_clip_fraction: float


def compute_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                        clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = 3.0,
                        token_weights: Tensor | None = None, shaped: Tensor | None = None,
                        shaping_gamma: float = 0.1) -> PolicyLoss:
    """PPO-clip per token with dual clip; shapes (N, T), advantages (N,) or (N, T).

    ratio ρ = exp(logp − old_logp);
      surrogate  L = max(−Â·ρ, −Â·clip(ρ, 1−ε_low, 1+ε_high))
      dual clip  L = min(L, −c·Â)                         for Â < 0 (c > 1)
    `token_weights` (detached, e.g. truncated importance weights) multiply L. Tokens where
    `shaped` is True use LUFFY's shaped objective instead: L = −Â · f(π_θ) with
    f(π) = π/(π+γ), unclipped (its gradient γ/(π+γ)² boosts low-probability tokens).
    """
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand_as(logp)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    is_dual = torch.zeros_like(is_clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        bound = -dual_clip * adv
        is_dual = (adv < 0) & (loss > bound)
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
    if shaped is not None:
        p = torch.exp(logp)
        loss = torch.where(shaped, -adv * p / (p + shaping_gamma), loss)
        is_clipped = is_clipped & ~shaped
        is_dual = is_dual & ~shaped
    if token_weights is not None:
        loss = loss * token_weights.detach()
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    return PolicyLoss(loss, float((is_clipped.float() * m).sum() / n), float((is_dual.float() * m).sum() / n))


def compute_truncated_is_weights(old_logp: Tensor, explorer_logp: Tensor, is_bank: Tensor, *,
                                 cap: float = 1.0) -> Tensor:
    """Per-token weights (N, T): min(π_old/π_explorer, C) on bank responses, 1 on online ones.
    `is_bank` is (N,). π_explorer is the explorer's stored log-prob of the token under the
    distribution it was sampled from (temperature 0.7 / top-p 0.95 in the paper: the
    behaviour policy μ), so the weight is min(π_old(y_t)/μ(y_t), C); stage 2 refuses a bank
    whose log-probs are raw (made before bank.json recorded `logprobs: sampling`)."""
    w = torch.exp((old_logp - explorer_logp).clamp(max=20.0)).clamp(max=cap)
    return torch.where(is_bank.unsqueeze(1), w, torch.ones_like(w)).detach()


@dataclass(frozen=True)
class BankTerms:
    """What a bank correction adds to `compute_policy_loss`, (N, T) each; None = not used."""

    token_weights: Tensor | None = None
    shaped: Tensor | None = None


def compute_bank_terms_none(old_logp: Tensor | None, explorer_logp: Tensor, is_bank: Tensor, mask: Tensor, *,
                            cap: float) -> BankTerms:
    """Paper: bank tokens enter the loss as online ones do (π_old is the learner's)."""
    return BankTerms()


def compute_bank_terms_truncated_is(old_logp: Tensor | None, explorer_logp: Tensor, is_bank: Tensor, mask: Tensor, *,
                                    cap: float) -> BankTerms:
    """Token weights min(π_old/π_explorer, C) on bank responses (`compute_truncated_is_weights`)."""
    if old_logp is None:
        raise ValueError("truncated IS weights need every row's old log-probs")
    return BankTerms(token_weights=compute_truncated_is_weights(old_logp, explorer_logp, is_bank, cap=cap))


def compute_bank_terms_luffy(old_logp: Tensor | None, explorer_logp: Tensor, is_bank: Tensor, mask: Tensor, *,
                             cap: float) -> BankTerms:
    """LUFFY's shaped objective on every real token of a bank response: (N, T) bool."""
    return BankTerms(shaped=is_bank.unsqueeze(1).expand_as(mask) & (mask > 0))


@dataclass(frozen=True)
class BankCorrectionVariant:
    """One bank correction: its loss terms, from (old log-probs or None, explorer log-probs
    (N, T), is_bank (N,), mask (N, T), cap); whether those need every row's old log-probs
    before the first update (then none may come from the training forward); whether they
    divide by the explorer's log-probs (the bank must store the sampling distribution's)."""

    terms: Callable[..., BankTerms]
    needs_old_logprobs: bool = False
    uses_explorer_logprobs: bool = False


BANK_CORRECTIONS: dict[BankCorrection, BankCorrectionVariant] = {
    BankCorrection.NONE: BankCorrectionVariant(compute_bank_terms_none),
    BankCorrection.TRUNCATED_IS: BankCorrectionVariant(compute_bank_terms_truncated_is, needs_old_logprobs=True,
                                                       uses_explorer_logprobs=True),
    BankCorrection.LUFFY: BankCorrectionVariant(compute_bank_terms_luffy),
}


def loss_normaliser(mask: Tensor, aggregation: Aggregation, *, max_len: int) -> float:
    """The divisor that makes `aggregate` over micro-batches sum to the batch aggregate.
    token-mean: number of real tokens; sequence-mean: N; constant: N · max_len."""
    return normaliser_from_counts(float(mask.sum()), mask.shape[0], aggregation, max_len=max_len)


def normaliser_from_counts(tokens: float, rows: int, aggregation: Aggregation, *, max_len: int) -> float:
    """`loss_normaliser` from the batch's real-token and row counts (a batch split over
    ranks sums its counts first, so every part divides by the whole batch's normaliser)."""
    if aggregation is Aggregation.TOKEN_MEAN:
        return max(tokens, 1.0)
    if aggregation is Aggregation.SEQUENCE_MEAN:
        return float(rows)
    return float(rows * max_len)


def aggregate(values: Tensor, mask: Tensor, aggregation: Aggregation, *, normaliser: float) -> Tensor:
    """Reduce per-token values (N, T) to a scalar: Σ over tokens (each sequence divided by
    its own length for sequence-mean), divided by `normaliser` (see `loss_normaliser`)."""
    m = mask.to(values.dtype)
    if aggregation is Aggregation.SEQUENCE_MEAN:
        per_seq = (values * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        return per_seq.sum() / normaliser
    return (values * m).sum() / normaliser
