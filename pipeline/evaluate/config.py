"""`EvaluateConfig`: the `evaluate` section of params.yaml, and the sampling presets."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from pipeline.engines.base import EngineKind, SamplingParams
from pipeline.memory import PlannedGpus

__all__ = ["EngineKind", "EvaluateConfig", "Preset"]


@dataclass(frozen=True)
class PresetValues:
    """The sampling knobs a preset fixes."""

    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float


class Preset(enum.Enum):
    """Named sampling settings for evaluation.

    - `qwen3-nothink`: the paper's evaluation sampling (METHOD §5), Qwen3's recommended
      non-thinking setting: temperature 0.7, top-p 0.8, top-k 20, presence penalty 1.5.
    - `plain`: the model's raw distribution (temperature 1.0, no filters, no penalty), as
      the testbed's `prepare` and the trainer's periodic evaluation sample.
    """

    QWEN3_NOTHINK = "qwen3-nothink"
    PLAIN = "plain"

    @property
    def values(self) -> PresetValues:
        return _PRESETS[self]


_PRESETS = {
    Preset.QWEN3_NOTHINK: PresetValues(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5),
    Preset.PLAIN: PresetValues(temperature=1.0, top_p=1.0, top_k=0, presence_penalty=0.0),
}


@dataclass(frozen=True)
class EvaluateConfig:
    """pass@k of one model on one or more benchmark files.

    `model` is a local directory or a hub id: full weights (`config.json` +
    `*.safetensors`) or a peft LoRA adapter (`adapter_config.json` +
    `adapter_model.safetensors`), which is merged onto its base — the adapter's
    `base_model_name_or_path` unless `base_model` names another. A hub adapter needs
    `base_model` set, since nothing is fetched to find out.

    `benchmarks` maps a name to a problems file (question/answer layout: AIME24/25,
    MATH-500, the testbed's test split) or a hub dataset id; a null path drops an entry
    (`--set benchmarks.testbed=null`). Problems carrying `flawed` are also scored by
    subset (all / flawed / rest).

    Sampling is the `preset`'s; `temperature`, `top_p`, `top_k` and `presence_penalty`
    override single values of it when set. `ks` defaults to 1, 2, 4, … up to `samples`.
    """

    model: str = "data/testbed/learner"  # local directory or hub id (full weights or LoRA adapter)
    revision: Optional[str] = None
    base_model: Optional[str] = None  # base of a LoRA adapter (default: the adapter's own record)
    name: Optional[str] = None  # label in outputs and diversity plots (default: out_dir's last part)
    benchmarks: dict[str, Optional[str]] = field(default_factory=lambda: {"testbed": "data/testbed/test.jsonl"})
    split: str = "test"  # hub datasets only
    layout: str = "auto"  # auto | qa | gsm8k | verl (see pipeline.data)
    question_field: Optional[str] = None
    answer_field: Optional[str] = None
    id_field: Optional[str] = None  # None = the layout's; "" = question-hash ids
    limit: Optional[int] = None  # first N problems of each benchmark (None = all)
    template: str = "{question}="  # pipeline.prompts: auto | chat | plain | a format string
    samples: int = 64  # n per problem
    ks: Optional[tuple[int, ...]] = None  # None = powers of two up to samples
    preset: Preset = Preset.PLAIN
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    presence_penalty: Optional[float] = None
    max_new_tokens: int = 48
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()  # added to generation_config's and the tokenizer's eos (pipeline.engines.stops)
    engine: EngineKind = EngineKind.AUTO
    batch_size: int = 2048  # sequences per generate call (HF batch; one progress-bar update)
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.85  # vLLM
    tensor_parallel_size: int = 1
    max_model_len: Optional[int] = None  # vLLM (None = the model's)
    scoring_workers: int = 2  # verifier processes with a hard timeout; 0 = in this process (trusted output)
    score_timeout_s: float = 10.0
    threads: Optional[int] = None  # torch CPU threads (None = torch's default)
    out_dir: str = "data/eval/learner"
    trust_remote_code: bool = False
    gpus: PlannedGpus = field(default_factory=PlannedGpus)  # memory_gb: what --dry-run plans for

    def __post_init__(self) -> None:
        bad = [k for k, v in self.benchmarks.items() if not isinstance(k, str) or not isinstance(v, (str, type(None)))]
        if bad:
            raise ValueError(f"benchmarks.{bad[0]} must map a name to a file path or hub id")
        if not self.benchmark_files:
            raise ValueError("benchmarks is empty; give at least one name: path")
        if self.samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("samples, max_new_tokens and batch_size must be ≥ 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be ≥ 1 (or null for all problems)")
        for k in self.ks or ():
            if not 1 <= k <= self.samples:
                raise ValueError(f"ks has k = {k} but only samples = {self.samples} per problem; "
                                 f"use 1 ≤ k ≤ {self.samples} or raise samples")
        sampling = self.sampling(n=1)
        if sampling.temperature <= 0 or not 0 < sampling.top_p <= 1 or sampling.top_k < 0:
            raise ValueError("need temperature > 0, 0 < top_p ≤ 1 and top_k ≥ 0")

    @property
    def benchmark_files(self) -> dict[str, str]:
        """name → path, without the entries set to null."""
        return {k: v for k, v in self.benchmarks.items() if v}

    @property
    def k_values(self) -> list[int]:
        from pipeline.evaluation import powers_of_two

        return sorted(set(self.ks)) if self.ks else powers_of_two(self.samples)

    @property
    def label(self) -> str:
        from pathlib import PurePath

        return self.name or PurePath(self.out_dir).name

    def sampling(self, *, n: int | None = None, seed: int | None = None) -> SamplingParams:
        """The preset's values with this config's overrides applied."""
        base = self.preset.values

        def pick(override, default):
            return default if override is None else override

        return SamplingParams(n=self.samples if n is None else n,
                              temperature=float(pick(self.temperature, base.temperature)),
                              top_p=float(pick(self.top_p, base.top_p)), top_k=int(pick(self.top_k, base.top_k)),
                              presence_penalty=float(pick(self.presence_penalty, base.presence_penalty)),
                              max_new_tokens=self.max_new_tokens, seed=self.seed if seed is None else seed)
