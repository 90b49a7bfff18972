"""Group assembly: which bank rows and how many online responses make each prompt's group.

Pure functions of explicit arguments (the rng is passed in). Paper default (METHOD §2):
every prompt gets G_w = ⌈α·G⌉ rows drawn without replacement from its bank pool and
G_s = G − G_w responses generated online by the current learner. A short pool gives
what it has and the rest is generated online, so every group has exactly G members.

Options beyond the paper (the issue's study), as two independent switches:
- `BankRows` — which rows are eligible: all (paper) or only rewarded ones (the explorer
  as a source of positive examples, as in LUFFY's use of correct off-policy traces);
- `BankPrompts` — which prompts receive bank rows: all (paper) or *rescue*, only prompts
  where every one of the learner's own G responses failed — where GRPO has no signal —
  replacing up to ⌈α·G⌉ of those failed responses; α then bounds how many.
`alternating_sizes` gives the released code's scheme (METHOD §3): separate bank-only
and online-only groups of ⌈α·G⌉ and ⌈(1−α)·G⌉.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.bank.draw import draw_rows
from stage2_train.schedule import bank_count


class BankRows(enum.Enum):
    ALL = "all"  # paper
    REWARDED = "rewarded"  # only rows the verifier rewarded


class BankPrompts(enum.Enum):
    ALL = "all"  # paper
    RESCUE = "rescue"  # only prompts whose online group of G is all wrong


class Mixing(enum.Enum):
    MIXED = "mixed"  # paper: one group of G mixing bank and online responses
    ALTERNATING = "alternating"  # released code: separate bank and online groups and optimizer steps


@dataclass(frozen=True)
class GroupPlan:
    """Per prompt: bank row positions to use, and how many online responses complete the group."""

    bank_rows: tuple[np.ndarray, ...]
    online: tuple[int, ...]

    @property
    def bank_total(self) -> int:
        return sum(len(r) for r in self.bank_rows)

    @property
    def online_total(self) -> int:
        return sum(self.online)


def eligible_pool(pool: Mapping[str, np.ndarray], correct: np.ndarray, rows: BankRows) -> dict[str, np.ndarray]:
    """The bank pool restricted to eligible rows; `correct[position]` is each row's verdict."""
    if rows is BankRows.ALL:
        return dict(pool)
    return {pid: pos[correct[pos]] for pid, pos in pool.items()}


def plan_groups(prompt_ids: Sequence[str], pool: Mapping[str, np.ndarray], *, alpha: float, group_size: int,
                rng: np.random.Generator, prompts: BankPrompts = BankPrompts.ALL,
                online_all_wrong: Sequence[bool] | None = None) -> GroupPlan:
    """Draw ⌈α·G⌉ rows per receiving prompt; the remainder of each group is online.

    With `BankPrompts.RESCUE`, `online_all_wrong[p]` says whether the learner's own G
    responses to prompt p all failed; only those prompts receive bank rows, and `online[p]`
    is then how many of the G generated responses to keep.
    """
    want = bank_count(alpha, group_size)
    if prompts is BankPrompts.RESCUE:
        if online_all_wrong is None or len(online_all_wrong) != len(prompt_ids):
            raise ValueError("rescue needs one online_all_wrong flag per prompt")
        counts = [want if wrong else 0 for wrong in online_all_wrong]
    else:
        counts = [want] * len(prompt_ids)
    draw = draw_rows(pool, list(zip(prompt_ids, counts)), rng)
    return GroupPlan(draw.rows, tuple(group_size - len(r) for r in draw.rows))


def alternating_sizes(alpha: float, group_size: int) -> tuple[int, int]:
    """(bank group size, online group size) of the released code: ⌈αG⌉ and ⌈(1−α)G⌉, both
    rounded up (so 17 responses at G = 16 when α is not a multiple of 1/16)."""
    return bank_count(alpha, group_size), math.ceil(round((1.0 - alpha) * group_size, 9))
