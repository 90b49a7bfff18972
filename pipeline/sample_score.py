"""Sample and score: per-problem correct counts and pass@k tables, for any engine.

The shared primitive of every evaluation: `prepare` (the family's pass@k table),
`s2lpo evaluate` (pipeline.evaluate) and the trainer's held-out evaluation
(stage2_train.held_out). The engine samples `params.n` responses per problem, the
verifier scores them against the problem's answer, and pass@k is the unbiased
estimator over problems (pipeline.passk).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pipeline.data import Problem
from pipeline.engines import Engine, SamplingParams
from pipeline.passk import mean_pass_at_k
from pipeline.prompts import encode_prompts, render_problems
from pipeline.verifier import Score, score_response

Scorer = Callable[[Sequence[str], Sequence[str]], list[Score]]


def score_in_process(responses: Sequence[str], golds: Sequence[str]) -> list[Score]:
    """Score in this process — for short, trusted outputs such as the testbed's."""
    return [score_response(r, g) for r, g in zip(responses, golds)]


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, … up to n (and n itself when n is not a power of two)."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks if ks[-1] == n else ks + [n]


def correct_counts(engine: Engine, tokenizer, problems: Sequence[Problem], params: SamplingParams, *,
                   template: str, scorer: Scorer = score_in_process) -> np.ndarray:
    """Number of correct responses among `params.n` samples, per problem."""
    texts = render_problems(tokenizer, problems, template=template)
    prompt_ids = encode_prompts(tokenizer, texts, template=template)
    groups = engine.generate(prompt_ids, params)
    responses = [c.text for group in groups for c in group]
    golds = [p.answer for p in problems for _ in range(params.n)]
    correct = np.array([s.correct for s in scorer(responses, golds)], dtype=bool)
    return correct.reshape(len(problems), params.n).sum(axis=1)


def passk_by_subset(counts: np.ndarray, n: int, subsets: dict[str, np.ndarray], ks: Sequence[int]) -> dict:
    """`{subset: {k: pass@k}}` for boolean masks over problems (e.g. all / flawed / rest)."""
    table = {}
    for name, mask in subsets.items():
        if mask.any():
            c = counts[mask]
            table[name] = mean_pass_at_k(np.full(len(c), n), c, ks)
    return table
