"""What a truncated response earns: `truncated_reward: verify | zero` (explore and train).

A response that reached `max_new_tokens` before a stop token has not finished its answer,
yet the verifier's fallbacks (the last number in the text) can still find a "correct" one:
an unfinished chain on an integer-answer problem often mentions the answer, or a number
equal to it, on its way. Rewarding that teaches the learner nothing about finishing.

- `zero` (the default): a truncated response gets the wrong-answer reward and counts as not
  correct, whatever the verifier extracts. DAPO (Yu et al., 2025, §3.4) finds rewards of
  truncated samples to be noise and removes it (overlong filtering, soft overlong
  punishment); `zero` is the same idea within a 0/1 reward, with no length-dependent term.
  It only changes anything where responses hit the limit (the testbed bank: 0.0%).
- `verify`: score truncated text like any other (the behaviour before this option).

A bank records the policy its cached rewards were made under (bank.json, `truncated_reward`;
banks made before it existed are `verify`); stage 2 applies its own policy to bank rows and
online responses alike, re-scoring drawn bank rows when it needs `verify` of a `zero` bank.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from pipeline.verifier import Score


class TruncatedReward(enum.Enum):
    VERIFY = "verify"
    ZERO = "zero"


BANK_DEFAULT = TruncatedReward.VERIFY  # what a bank.json without the key was made under


def apply_truncated_reward(score: Score, *, truncated: bool, policy: TruncatedReward,
                           wrong_reward: float = 0.0) -> Score:
    """`score` as `policy` rewards it: unchanged unless the response is truncated under `zero`,
    where it becomes (wrong_reward, not correct); the extracted answer is kept for inspection.
    A non-finite reward is kept too: a verifier gone wrong must still stop the run."""
    if not truncated or policy is TruncatedReward.VERIFY or not math.isfinite(score.reward):
        return score
    return dataclasses.replace(score, reward=wrong_reward, correct=False)
