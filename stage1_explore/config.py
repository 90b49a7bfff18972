"""`ExploreConfig`: the `explore` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config_blocks import EngineKind, EngineSettings, PromptSource, Sampling, Scoring
from pipeline.memory import PlannedGpus
from pipeline.rewards import TruncatedReward

__all__ = ["EngineKind", "ExploreConfig", "TruncatedReward"]


@dataclass(frozen=True)
class ExploreConfig(Scoring, EngineSettings, Sampling, PromptSource):
    """Sampling M responses per training prompt from the explorer.

    Paper setting: M = 32, temperature 0.7, top-p 0.95 (METHOD §2). The CPU default keeps
    the paper's sampling and uses M = 16 so the stage takes about a minute on the testbed.
    Everything except `engine`, the batch sizes and the scoring workers is part of the
    bank's identity: pointing other settings at an existing bank is refused, while
    raising `samples_per_prompt` appends the missing samples.

    The prompt source, sampling, engine and scoring fields are the shared blocks'
    (pipeline.config_blocks); the fields re-declared below differ from their defaults.
    """

    temperature: float = 0.7  # the paper's explorer sampling (METHOD §2)
    top_p: float = 0.95
    gpu_memory_utilization: float = 0.25  # vLLM; on CPU this is the share of RAM
    prompts: str = "data/testbed/train.jsonl"  # local .jsonl/.parquet or a hub dataset id
    explorer: str = "data/testbed/explorer"  # local model directory or hub id
    template: str = "{question}="  # prompt template (pipeline.prompts): auto | chat | plain | format
    bank: str = "data/bank"  # local path or pyarrow filesystem URI
    samples_per_prompt: int = 16
    truncated_reward: TruncatedReward = TruncatedReward.ZERO  # reward of a response cut by max_new_tokens (pipeline.rewards)
    prompts_per_shard: int = 512
    gpus: PlannedGpus = field(default_factory=PlannedGpus)  # memory_gb: what --dry-run plans for

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_prompt < 1:
            raise ValueError("samples_per_prompt must be ≥ 1")
        if self.prompts_per_shard < 1:
            raise ValueError("prompts_per_shard must be ≥ 1")
