"""What a step reports: its timings (`Timer`) and its statistics (`step_stats`) over the
responses of all ranks, in the names metrics.jsonl records."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from stage2_train.distributed import Dist
from stage2_train.rollout import Response


@dataclass
class Timer:
    """Seconds spent per named phase (`with timer("generate"): ...`), summed over calls."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] += time.perf_counter() - self.t

        return _Span()


ADDITIVE = ("tokens", "loss", "entropy", "clip", "dual_clip", "kl")  # sums over ranks; grad_norm and updates agree


def reduce_sums(d: Dist, sums: dict[str, float]) -> dict[str, float]:
    """The loss statistics of all ranks (additive ones summed)."""
    if not d.active:
        return sums
    return dict(sums, **{k: d.sum(sums[k]) for k in ADDITIVE})


def gather_responses(d: Dist, responses: list[Response], rewards: torch.Tensor, adv: torch.Tensor) -> dict:
    """What the step's statistics need of every response, from all ranks in prompt order."""
    mine = {"reward": np.array([r.reward for r in responses], dtype=float),
            "correct": np.array([r.correct for r in responses], dtype=bool),
            "from_bank": np.array([r.from_bank for r in responses], dtype=bool),
            "length": np.array([len(r.token_ids) for r in responses], dtype=np.int64),
            "truncated": np.array([r.truncated for r in responses], dtype=bool),
            "rewards": rewards, "adv": adv}
    parts = d.gather(mine)
    return {k: (torch.cat if k in ("rewards", "adv") else np.concatenate)([p[k] for p in parts]) for k in mine}


def step_stats(s: dict, sums: dict[str, float], generated_tokens: int) -> dict:
    """The step's record: group composition, rewards, advantages, loss terms and token counts
    (`generated_tokens`: every token the learner generated on all ranks, discarded ones included)."""
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
        "tokens/online_generated": generated_tokens,
        "tokens/bank": int(s["length"][bank].sum()), "tokens/online": int(s["length"][~bank].sum()),
        "truncated": float(np.mean(s["truncated"])),
    }
    for name, part in (("bank", bank), ("online", ~bank)):
        stats[f"{name}/responses"] = int(part.sum())
        stats[f"{name}/reward"] = float(np.mean(s["reward"][part])) if part.any() else None
        stats[f"{name}/accuracy"] = float(np.mean(s["correct"][part])) if part.any() else None
        stats[f"{name}/length"] = float(np.mean(s["length"][part])) if part.any() else None
    return stats


def merge_alternating(bank_stats: dict, online_stats: dict, bank_size: int, online_size: int,
                      generated_tokens: int) -> dict:
    """The record of an alternating step (METHOD §3): the online phase's stats (the bank
    phase's when there is no online one) with the bank phase's bank counts, the two group
    sizes as g_w and g_s, and the tokens generated in both phases."""
    merged = dict(online_stats or bank_stats)
    for key in ("bank/responses", "bank/reward", "bank/accuracy", "bank/length", "tokens/bank"):
        if key in bank_stats:
            merged[key] = bank_stats[key]
    merged["g_w"], merged["g_s"] = float(bank_size), float(online_size)
    merged["tokens/online_generated"] = generated_tokens
    return merged
