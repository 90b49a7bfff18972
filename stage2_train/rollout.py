"""One step's rollouts: online responses from the learner, bank rows from the explorer,
one verifier over both, assembled group-major (bank members first in each group).

Shell around the pure `groups` plan: it talks to the engine, the bank reader and the
scorer, and returns plain `Response` records that `policy.pack` turns into tensors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.bank.for_training import check_prompt_ids
from pipeline.engines import Completion, SamplingParams
from pipeline.rewards import TruncatedReward, apply_truncated_reward
from pipeline.verifier import Scorer

if TYPE_CHECKING:
    from pipeline.bank.reader import BankReader
    from stage2_train.rollout_engines import RolloutEngine


@dataclass(frozen=True)
class Response:
    """One member of a group. `explorer_logprobs` is set for bank rows only."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    text: str
    reward: float
    correct: bool
    from_bank: bool
    truncated: bool
    explorer_logprobs: tuple[float, ...] | None = None


def step_seed(seed: int, step: int, purpose: str) -> int:
    """A 31-bit seed fixed by (run seed, step, purpose): resumed runs repeat exactly."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{purpose}".encode()).digest()[:4], "big") >> 1


def sample_online(engine: RolloutEngine, prompt_ids: Sequence[Sequence[int]], counts: Sequence[int],
                  params: SamplingParams) -> list[list[Completion]]:
    """`counts[p]` completions for prompt p (one engine call per distinct count)."""
    by_count: dict[int, list[int]] = {}
    for p, n in enumerate(counts):
        if n > 0:
            by_count.setdefault(n, []).append(p)
    out: list[list[Completion]] = [[] for _ in counts]
    for n, ps in sorted(by_count.items()):
        call = SamplingParams(n=n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                              max_new_tokens=params.max_new_tokens, seed=params.seed + n)
        for p, group in zip(ps, engine.generate([prompt_ids[p] for p in ps], call)):
            out[p] = group
    return out


def online_responses(completions: list[list[Completion]], prompt_ids: Sequence[Sequence[int]], golds: Sequence[str],
                     scorer: Scorer, *,
                     truncated_reward: TruncatedReward = TruncatedReward.VERIFY) -> list[list[Response]]:
    """Score every completion against its prompt's gold answer (truncated ones as
    `truncated_reward` says, pipeline.rewards)."""
    flat = [(p, c) for p, group in enumerate(completions) for c in group]
    scores = scorer([c.text for _, c in flat], [golds[p] for p, _ in flat])
    scores = [apply_truncated_reward(s, truncated=c.finish_reason == "length", policy=truncated_reward)
              for s, (_, c) in zip(scores, flat)]
    out: list[list[Response]] = [[] for _ in completions]
    for (p, c), s in zip(flat, scores):
        out[p].append(Response(tuple(prompt_ids[p]), tuple(c.token_ids), c.text, float(s.reward), bool(s.correct),
                               False, c.finish_reason == "length"))
    return out


def bank_responses(reader: BankReader, rows: Sequence[np.ndarray], prompt_ids: Sequence[Sequence[int]],
                   golds: Sequence[str], *, names: Sequence[str], bank: str = "bank", rescore: Scorer | None = None,
                   truncated_reward: TruncatedReward = TruncatedReward.VERIFY) -> list[list[Response]]:
    """Read the planned bank rows, refusing one whose stored prompt ids are not `prompt_ids`
    (`names`: the prompts' ids, for the message); `rescore` (a scorer) replaces the cached
    rewards when the bank was filled by a different verifier version (or zeroed truncated
    rows this run verifies); then truncated rows are rewarded as `truncated_reward` says."""
    flat = [(p, int(r)) for p, rs in enumerate(rows) for r in rs]
    out: list[list[Response]] = [[] for _ in rows]
    if not flat:
        return out
    table = reader.read([r for _, r in flat]).to_pydict()
    for k, (p, r) in enumerate(flat):
        check_prompt_ids(table["prompt_token_ids"][k], prompt_ids[p], prompt=names[p], row=r, bank=bank)
    rewards, correct = table["reward"], table["correct"]
    if rescore is not None:
        scores = rescore(table["response"], [golds[p] for p, _ in flat])
        rewards, correct = [s.reward for s in scores], [s.correct for s in scores]
    truncated = [f == "length" for f in table["finish_reason"]]
    if truncated_reward is TruncatedReward.ZERO:
        zeroed = [t and math.isfinite(r) for r, t in zip(rewards, truncated)]  # a non-finite reward still stops the run
        rewards = [0.0 if z else r for r, z in zip(rewards, zeroed)]
        correct = [False if z else c for c, z in zip(correct, zeroed)]
    for k, (p, _) in enumerate(flat):
        out[p].append(Response(tuple(prompt_ids[p]), tuple(table["response_token_ids"][k]), table["response"][k],
                               float(rewards[k]), bool(correct[k]), True, table["finish_reason"][k] == "length",
                               tuple(table["logprobs"][k])))
    return out


def assemble(bank: list[list[Response]], online: list[list[Response]], *, keep_online: Sequence[int],
             group_size: int) -> list[Response]:
    """Group-major list: each prompt's bank members, then its first `keep_online[p]` online
    responses; every group must come out with exactly `group_size` members."""
    out: list[Response] = []
    for p, (b, o) in enumerate(zip(bank, online)):
        members = list(b) + list(o[: keep_online[p]])
        if len(members) != group_size:
            raise RuntimeError(f"group {p} has {len(members)} members, expected {group_size}")
        out.extend(members)
    return out
