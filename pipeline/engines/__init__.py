"""Generation engines: one interface (`Engine.generate`), several real backends.

An engine knows only token ids: it takes tokenised prompts and `SamplingParams`
and returns, per prompt, `n` `Completion`s with the sampled token ids, their text,
the log-prob of every sampled token under the distribution it was sampled from, and
why generation stopped (a token of the stop set, `pipeline.engines.stops`, or the length).
"""

from pipeline.engines.base import Completion, Engine, EngineKind, SamplingParams, resolve_engine_kind

__all__ = ["Completion", "Engine", "EngineKind", "SamplingParams", "resolve_engine_kind"]
