"""The engine contract shared by explorer sampling, online learner rollouts and evaluation."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence


class EngineKind(enum.Enum):
    """Generation backend. `auto` = vLLM when a CUDA GPU and vLLM are present, else HF
    `generate` (faster than vLLM-CPU for the ~1M-parameter testbed models; see
    benchmarks/explore_engines.py)."""

    AUTO = "auto"
    VLLM = "vllm"
    HF = "hf"


def resolve_engine_kind(kind: EngineKind) -> EngineKind:
    """`auto` → vLLM iff a CUDA GPU and the vllm package are both present, else HF."""
    if kind is not EngineKind.AUTO:
        return kind
    import importlib.util

    import torch

    return EngineKind.VLLM if torch.cuda.is_available() and importlib.util.find_spec("vllm") else EngineKind.HF


FINISH_STOP = "stop"  # the model emitted a token of its stop set (pipeline.engines.stops)
FINISH_LENGTH = "length"  # max_new_tokens ran out first


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `top_k = 0` and `top_p = 1.0` disable those filters.

    `presence_penalty` is subtracted from the logit of every token that already occurs in
    the response so far (not the prompt), before temperature and top-k/top-p — vLLM's and
    OpenAI's definition; 0 disables it. Qwen3's recommended no-think sampling uses 1.5.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 0
    presence_penalty: float = 0.0


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    `token_ids` end with the stop token when `finish_reason == "stop"` (the learner is
    trained to stop); `text` is the decode of the tokens before it, other special tokens
    kept (see `pipeline.engines.stops`). `logprobs[t]` is log μ(token_ids[t] | prefix) under
    the distribution the token was *sampled from*: the model's logits after the presence
    penalty, divided by the temperature, restricted to top-k/top-p and renormalised (vLLM's
    `logprobs_mode="processed_logprobs"`). That is the behaviour policy an off-policy
    correction divides by; at temperature 1 without filters or penalty it is the raw
    distribution.
    """

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    finish_reason: str


class Engine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Completion]]:
        """`params.n` completions for each tokenised prompt, in prompt order. `seeds[p][j]`
        seeds sample j of prompt p where the backend samples per request (vLLM); None =
        `default_seeds(params.seed, len(prompts), params.n)`."""
        ...


def sample_seed(base_seed: int, key: str, sample_index: int) -> int:
    """A 63-bit seed fixed by (base seed, prompt key, sample index): every sample draws from
    its own stream, and the same triple always draws the same one.

    One seed per generate call would make vLLM draw sample j of *every* prompt in the call
    from one stream (its n children get seed + j), correlating the noise across prompts."""
    digest = hashlib.sha256(f"{base_seed}:{key}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def default_seeds(base_seed: int, prompts: int, n: int) -> list[list[int]]:
    """Per-(prompt position, sample) seeds of a call that names no prompt keys."""
    return [[sample_seed(base_seed, f"#{p}", j) for j in range(n)] for p in range(prompts)]
