"""Drawing bank rows for one training step: pure selection with an explicit rng.

`draw_rows` picks, for each requested (prompt, count), `count` distinct rows of that
prompt's pool — without replacement inside the request, independently across requests.

Rule for short pools: a prompt with fewer rows than asked gives all of its rows (in a
random order) and the difference is reported as `shortfall`; the trainer then generates
that many more responses online, so the group still has G members. A prompt with no
rows at all has shortfall == count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draw:
    """Per request: the chosen row positions and how many rows were missing."""

    rows: tuple[np.ndarray, ...]
    shortfall: tuple[int, ...]


def draw_rows(pool: Mapping[str, np.ndarray], requests: Sequence[tuple[str, int]],
              rng: np.random.Generator) -> Draw:
    """Choose rows for every (prompt_id, count) in `requests` from `pool[prompt_id]`."""
    chosen, short = [], []
    empty = np.empty(0, dtype=np.int64)
    for prompt_id, count in requests:
        if count < 0:
            raise ValueError(f"count for {prompt_id!r} must be ≥ 0, got {count}")
        rows = pool.get(prompt_id, empty)
        take = min(count, len(rows))
        chosen.append(rng.choice(rows, size=take, replace=False) if take else empty)
        short.append(count - take)
    return Draw(tuple(chosen), tuple(short))
