"""Difficulty from the bank: keep only training prompts whose explorer pass rate lies in a band.

The bank caches every row's verdict (`correct`), so each prompt's explorer pass rate — the
share of its M samples the verifier rewarded — is known without a rollout. DAPO filters
prompts by the *learner's* pass rate, which costs extra rollouts; `train.bank_pass_band:
[low, high]` filters by the explorer's, for free. Prompts the bank does not hold have no
rate and are dropped when a band is set. Pure functions; `apply_pass_band` is the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import UserError

if TYPE_CHECKING:
    from stage2_train.context import Rollouts


def pass_rates(pool: Mapping[str, np.ndarray], correct: np.ndarray) -> dict[str, float]:
    """Each prompt's cached pass rate: rewarded rows / rows (`pool`: prompt id → row positions)."""
    return {pid: float(correct[pos].mean()) for pid, pos in pool.items() if len(pos)}


def in_band(prompt_ids: Sequence[str], rates: Mapping[str, float], band: tuple[float, float]) -> list[int]:
    """Indices of the prompts whose rate lies in [low, high] (both ends included), in order."""
    low, high = band
    eps = 1e-9  # 0.1 + 0.2-style rounding must not move a rate of exactly `high` out of the band
    return [i for i, pid in enumerate(prompt_ids)
            if pid in rates and low - eps <= rates[pid] <= high + eps]


def apply_pass_band(rollouts: Rollouts, band: tuple[float, float], *, echo: Callable[[str], None] = print) -> None:
    """Restrict `rollouts.problems` (and their token ids) to the band, using `rollouts.reader`'s index."""
    rates = pass_rates(rollouts.reader.pool, rollouts.reader.correct)
    keep = in_band([p.id for p in rollouts.problems], rates, band)
    if not keep:
        raise UserError(f"train.bank_pass_band {list(band)}: no training prompt's explorer pass rate lies in it; "
                        "widen the band (`s2lpo bank info` shows the bank's pass-rate histogram)")
    echo(f"train: bank_pass_band {list(band)} keeps {len(keep)} of {len(rollouts.problems)} prompts")
    rollouts.problems = [rollouts.problems[i] for i in keep]
    rollouts.prompt_ids = [rollouts.prompt_ids[i] for i in keep]
