"""`ExploreConfig`: the `explore` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.engines.base import EngineKind
from pipeline.memory import PlannedGpus
from pipeline.rewards import TruncatedReward

__all__ = ["EngineKind", "ExploreConfig", "TruncatedReward"]


@dataclass(frozen=True)
class ExploreConfig:
    """Sampling M responses per training prompt from the explorer.

    Paper setting: M = 32, temperature 0.7, top-p 0.95 (METHOD §2). The CPU default keeps
    the paper's sampling and uses M = 16 so the stage takes about a minute on the testbed.
    Everything except `engine`, the batch sizes and the scoring workers is part of the
    bank's identity: pointing other settings at an existing bank is refused, while
    raising `samples_per_prompt` appends the missing samples.
    """

    prompts: str = "data/testbed/train.jsonl"  # local .jsonl/.parquet or a hub dataset id
    split: str = "train"
    layout: str = "auto"  # auto | qa | gsm8k | verl (see pipeline.data)
    question_field: Optional[str] = None
    answer_field: Optional[str] = None
    id_field: Optional[str] = None  # None = the layout's; "" = question-hash ids
    limit: Optional[int] = None  # first N prompts after dedup (None = all)
    explorer: str = "data/testbed/explorer"  # local model directory or hub id
    revision: Optional[str] = None
    template: str = "{question}="  # prompt template (pipeline.prompts): auto | chat | plain | format
    bank: str = "data/bank"  # local path or pyarrow filesystem URI
    samples_per_prompt: int = 16
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 48
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()  # added to generation_config's and the tokenizer's eos (pipeline.engines.stops)
    truncated_reward: TruncatedReward = TruncatedReward.ZERO  # reward of a response cut by max_new_tokens (pipeline.rewards)
    engine: EngineKind = EngineKind.AUTO
    prompts_per_shard: int = 512
    batch_size: int = 2048  # sequences per HF generate call
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.25  # vLLM; on CPU this is the share of RAM
    tensor_parallel_size: int = 1
    scoring_workers: int = 2
    score_timeout_s: float = 10.0
    trust_remote_code: bool = False
    gpus: PlannedGpus = field(default_factory=PlannedGpus)  # memory_gb: what --dry-run plans for

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError("samples_per_prompt must be ≥ 1")
        if not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise ValueError("need 0 < top_p ≤ 1 and temperature > 0")
        if self.prompts_per_shard < 1 or self.max_new_tokens < 1:
            raise ValueError("prompts_per_shard and max_new_tokens must be ≥ 1")
