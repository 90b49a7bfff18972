"""The anneal rate α_i: the share of each prompt's group of G drawn from the bank at step i.

Paper (METHOD §2, linear): α_i = 1 − (i−1)/(T_mix−1) for i ≤ T_mix, else 0 — exactly 1 at
step 1 and 0 at step T_mix. Every schedule here shares those end points (scaled by
`initial_rate`) except `constant`, which never anneals (the "fixed α" ablation):

- linear:      α = a0 · (1 − u)
- cosine:      α = a0 · (1 + cos πu) / 2
- exponential: α = a0 · floor^u                (u < 1; `floor` = α just before T_mix / a0)
- step:        α = a0                          (i < T_mix)
- constant:    α = a0                          (every step)

with u = (i−1)/(T_mix−1) ∈ [0, 1] and α = 0 for i ≥ T_mix. T_mix ≤ 1 means plain GRPO.
G_w = ⌈α·G⌉ (both counts in the paper's table round the bank share up).
"""

from __future__ import annotations

import enum
import math


class Schedule(enum.Enum):
    LINEAR = "linear"  # the paper's Algorithm 1
    COSINE = "cosine"  # slower start, faster finish: more bank steps near α = 1
    EXPONENTIAL = "exponential"  # fast early decay, long tail
    STEP = "step"  # full bank share, then plain GRPO from step T_mix
    CONSTANT = "constant"  # no anneal (ablation: fixed α); a0 = 0 is plain GRPO


def anneal_rate(step: int, *, schedule: Schedule, t_mix: int, initial_rate: float = 1.0,
                floor: float = 0.05) -> float:
    """α at 1-based `step`."""
    if step < 1:
        raise ValueError(f"steps are 1-based, got {step}")
    if not 0.0 <= initial_rate <= 1.0:
        raise ValueError(f"initial_rate must be in [0, 1], got {initial_rate}")
    if schedule is Schedule.CONSTANT:
        return initial_rate
    if t_mix <= 1 or step >= t_mix:
        return 0.0
    u = (step - 1) / (t_mix - 1)
    shape = {
        Schedule.LINEAR: lambda: 1.0 - u,
        Schedule.COSINE: lambda: 0.5 * (1.0 + math.cos(math.pi * u)),
        Schedule.EXPONENTIAL: lambda: floor ** u,
        Schedule.STEP: lambda: 1.0,
    }[schedule]()
    return initial_rate * shape


def bank_count(alpha: float, group_size: int) -> int:
    """G_w = ⌈α·G⌉. The product is rounded to 9 decimals first so that e.g. α = 0.3,
    G = 10 (2.9999999999999996 in floating point) gives 3, not 4."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return math.ceil(round(alpha * group_size, 9))
