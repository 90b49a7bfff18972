"""The testbed task: the sum of three 2-digit numbers, worked as two pairwise additions.

A problem `a+b+c` has 12 correct solution orders: pick the pair added first (3),
the order inside it (2) and the order of the second addition (2), e.g.

    64+58+37=  →  64+58=122,37+122=159\\boxed{159}

Errors compound: a wrong first partial sum propagates into the final answer, which
the shared verifier reads from `\\boxed{}`.

**The planted flaw.** Demonstrations of *flawed* problems (first number ≥
`flaw_threshold`, ~11% of problems at threshold 90) write the final sum
`flaw_offset` too high, while the reward always uses the true sum. A large model
absorbs this systematic flaw; a small one only partly, so the small explorer keeps
correct answers in its support exactly where the large learner has none — the
paper's policy-level diversity in miniature. `flaw_offset = 0` gives the clean
variant of the family.

Everything here is a pure function of its arguments and an explicit
`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUESTION_TEMPLATE = "{question}="  # the testbed prompt: "64+58+37="


@dataclass(frozen=True)
class TaskSpec:
    """The task's knobs: operand range and the planted flaw."""

    low: int = 10
    high: int = 99
    flaw_threshold: int = 90
    flaw_offset: int = 10


def is_flawed(numbers: tuple[int, int, int], spec: TaskSpec) -> bool:
    """Whether demonstrations of this problem carry the planted flaw."""
    return spec.flaw_offset != 0 and numbers[0] >= spec.flaw_threshold


def sample_numbers(rng: np.random.Generator, n: int, spec: TaskSpec) -> np.ndarray:
    """`n` problems as an (n, 3) int array, operands uniform in [low, high]."""
    return rng.integers(spec.low, spec.high + 1, size=(n, 3))


def sample_flawed_numbers(rng: np.random.Generator, n: int, spec: TaskSpec) -> np.ndarray:
    """`n` problems that are all flawed (first operand in [flaw_threshold, high])."""
    nums = sample_numbers(rng, n, spec)
    nums[:, 0] = rng.integers(spec.flaw_threshold, spec.high + 1, size=n)
    return nums


def question(numbers: tuple[int, int, int]) -> str:
    a, b, c = numbers
    return f"{a}+{b}+{c}"


def solution(numbers: tuple[int, int, int], order: int, *, offset: int = 0) -> str:
    """The worked solution for one of the 12 orders (0..11); `offset` shifts the final sum.

    order = 4·pair + 2·swap_first + swap_second, where `pair` picks which two operands
    are added first.
    """
    if not 0 <= order < 12:
        raise ValueError(f"order must be in 0..11, got {order}")
    pair, rest = divmod(order, 4)
    swap_first, swap_second = divmod(rest, 2)
    i, j = [(0, 1), (0, 2), (1, 2)][pair]
    k = 3 - i - j
    x, y, z = numbers[i], numbers[j], numbers[k]
    if swap_first:
        x, y = y, x
    partial = x + y
    total = partial + z + offset
    second = f"{partial}+{z}" if swap_second else f"{z}+{partial}"
    return f"{x}+{y}={partial},{second}={total}\\boxed{{{total}}}"


def demonstration(numbers: tuple[int, int, int], rng: np.random.Generator, spec: TaskSpec) -> str:
    """A random-order demonstration, carrying the flaw when the problem is flawed."""
    offset = spec.flaw_offset if is_flawed(numbers, spec) else 0
    return solution(numbers, int(rng.integers(12)), offset=offset)


def answer(numbers: tuple[int, int, int]) -> str:
    """The true answer, used by the reward whatever the demonstrations say."""
    return str(sum(int(v) for v in numbers))
