"""The engine contract shared by explorer sampling, online learner rollouts and evaluation."""

from __future__ import annotations

import enum
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


FINISH_STOP = "stop"  # the model emitted its end-of-sequence token
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

    `token_ids` include the end-of-sequence token when `finish_reason == "stop"` (the
    learner is trained to stop), `text` excludes special tokens, and `logprobs[t]` is
    log π(token_ids[t] | prefix) under the model's raw distribution (temperature 1,
    no top-p/top-k), as vLLM reports by default.
    """

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    finish_reason: str


class Engine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions for each tokenised prompt, in prompt order."""
        ...
