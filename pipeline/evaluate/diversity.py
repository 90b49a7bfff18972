"""Diversity diagnostics as pure functions: distinct correct solutions and curve crossings.

The paper's evidence that a smaller sibling explores differently (METHOD §1): its
pass@1 is lower, but its pass@k rises faster with k and crosses the larger model's.
Two numbers make that concrete for any set of models:

- **where pass@k curves cross** — for two curves, the first k at which the one that
  starts lower (at the smallest k both report) reaches the other
  (`pipeline.passk.crossover_k`, applied to every pair in `crossings`);
- **distinct correct solutions per problem** — how many *different* correct responses a
  model produced among its n samples. Two responses count as the same solution when
  their texts are equal after collapsing whitespace runs (`normalize_whitespace`).
  Which responses count is a `Counting`: the verifier's verdict on the final answer
  (`answer`, any benchmark), or on the testbed also every step (`testbed-steps`). The
  difference matters there: a response whose wrong partial sum is cancelled by a second
  error (`18+25=33,93+33=136`) has the right answer, so under `answer` the count can
  exceed the 12 clean orders of additions. On math benchmarks nearly every correct long
  response is distinct, and the count mostly tracks the number correct.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from pipeline.passk import crossover_k


class Counting(enum.Enum):
    """Which responses count as solutions when counting distinct ones."""

    ANSWER = "answer"  # the verifier's verdict on the final answer (any benchmark)
    TESTBED_STEPS = "testbed-steps"  # testbed only: the answer and both partial sums right


_TESTBED_SOLUTION = re.compile(r"(\d+)\+(\d+)=(\d+),(\d+)\+(\d+)=(\d+)\\boxed\{(\d+)\}")


def is_clean_testbed_solution(question: str, response: str) -> bool:
    """Whether `response` works `question` ("a+b+c") as `pipeline.testbed.task.solution`
    does, with every step right: `x+y=p,u+v=s\\boxed{s}` where {x, y} are two operands,
    {u, v} are p and the third operand, p = x + y and s = u + v. Whitespace at the ends
    is ignored; anything else around the solution makes it invalid."""
    match = _TESTBED_SOLUTION.fullmatch(response.strip())
    if match is None:
        return False
    x, y, p, u, v, s, boxed = map(int, match.groups())
    if x + y != p or u + v != s or boxed != s or p not in (u, v):
        return False
    third = v if u == p else u
    return sorted((x, y, third)) == sorted(int(t) for t in question.split("+"))


def counted(questions: Sequence[str], responses: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]],
            counting: Counting) -> list[list[bool]]:
    """Per problem and sample: does the response count as a solution under `counting`."""
    if counting is Counting.ANSWER:
        return [list(map(bool, c)) for c in correct]
    return [[bool(ok) and is_clean_testbed_solution(q, r) for r, ok in zip(rs, cs)]
            for q, rs, cs in zip(questions, responses, correct, strict=True)]


def distinct_correct(responses: Sequence[str], correct: Sequence[bool], *, normalize_whitespace: bool = True) -> int:
    """Number of different texts among the correct responses of one problem.

    Args:
        responses: the n sampled response texts.
        correct: the verifier's verdict on each, same length.
        normalize_whitespace: compare texts with every whitespace run collapsed to one
            space and the ends stripped (so a trailing newline is not a new solution).
    """
    if len(responses) != len(correct):
        raise ValueError(f"got {len(responses)} responses but {len(correct)} verdicts; pass one verdict per response")
    key = (lambda t: " ".join(t.split())) if normalize_whitespace else (lambda t: t)
    return len({key(r) for r, ok in zip(responses, correct) if ok})


def distinct_correct_counts(responses: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]], *,
                            normalize_whitespace: bool = True) -> np.ndarray:
    """`distinct_correct` for every problem: an int array of shape [P]."""
    return np.array([distinct_correct(r, c, normalize_whitespace=normalize_whitespace)
                     for r, c in zip(responses, correct, strict=True)], dtype=np.int64)


@dataclass(frozen=True)
class DistinctSummary:
    """Distinct correct solutions over a set of problems.

    `mean` is over all problems; `mean_solved` over problems with at least one correct
    sample (None when none was solved); `share` is distinct / correct over all samples —
    1.0 when every correct sample is a different text, 1/n when a model repeats one.
    """

    mean: float
    mean_solved: Optional[float]
    share: Optional[float]


def summarize_distinct(distinct: np.ndarray, n_correct: np.ndarray) -> DistinctSummary:
    """Summarise per-problem distinct-correct counts against per-problem correct counts."""
    distinct, n_correct = np.asarray(distinct), np.asarray(n_correct)
    if distinct.shape != n_correct.shape or distinct.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {distinct.shape} and {n_correct.shape}")
    if np.any(distinct > n_correct):
        raise ValueError("a problem has more distinct correct solutions than correct samples")
    solved = n_correct > 0
    return DistinctSummary(mean=float(distinct.mean()),
                           mean_solved=float(distinct[solved].mean()) if solved.any() else None,
                           share=float(distinct.sum() / n_correct.sum()) if n_correct.sum() else None)


@dataclass(frozen=True)
class Crossing:
    """Curve `lower` starts below curve `higher` and reaches it at k (None: never, within the ks)."""

    lower: str
    higher: str
    k: Optional[int]


def crossings(curves: Mapping[str, Mapping[int, float]]) -> list[Crossing]:
    """For every pair of named pass@k curves, where the lower-starting one catches up.

    Pairs are taken in the order of `curves`; a pair whose curves are equal at the
    smallest common k, or that share no k, is left out. Ties after the start count as
    reached (`crossover_k` uses >=).
    """
    names = list(curves)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sorted(set(curves[a]) & set(curves[b]))
            if not common or curves[a][common[0]] == curves[b][common[0]]:
                continue
            lower, higher = (a, b) if curves[a][common[0]] < curves[b][common[0]] else (b, a)
            out.append(Crossing(lower, higher, crossover_k(curves[lower], curves[higher])))
    return out
