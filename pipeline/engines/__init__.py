"""Generation engines: one interface (`Engine.generate`), several real backends.

An engine knows only token ids: it takes tokenised prompts and `SamplingParams`
and returns, per prompt, `n` `Completion`s with the sampled token ids, their text,
the log-prob of every sampled token under the model's raw (untempered, unfiltered)
distribution, and why generation stopped.
"""

from pipeline.engines.base import Completion, Engine, EngineKind, SamplingParams, resolve_engine_kind

__all__ = ["Completion", "Engine", "EngineKind", "SamplingParams", "resolve_engine_kind"]
