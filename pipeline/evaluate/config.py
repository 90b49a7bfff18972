"""`EvaluateConfig`: the `evaluate` section of params.yaml (its sampling presets: pipeline.config_blocks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.config_blocks import EngineKind, EngineSettings, Generation, Preset, PresetSampling, PromptSource, Scoring
from pipeline.engines.base import SamplingParams
from pipeline.memory import PlannedGpus

__all__ = ["EngineKind", "EvaluateConfig", "Preset"]


@dataclass(frozen=True)
class EvaluateConfig(Scoring, EngineSettings, PresetSampling, Generation, PromptSource):
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
    override single values of it when set (pipeline.config_blocks.PresetSampling, which the
    trainer's held-out evaluation shares). `ks` defaults to 1, 2, 4, … up to `samples`.
    The prompt source, generation, engine and scoring fields are the shared blocks'; the
    fields re-declared first below differ from the blocks' defaults.
    """

    split: str = "test"  # hub datasets only: benchmarks are test splits
    model: str = "data/testbed/learner"  # local directory or hub id (full weights or LoRA adapter)
    base_model: Optional[str] = None  # base of a LoRA adapter (default: the adapter's own record)
    name: Optional[str] = None  # label in outputs and diversity plots (default: out_dir's last part)
    benchmarks: dict[str, Optional[str]] = field(default_factory=lambda: {"testbed": "data/testbed/test.jsonl"})
    template: str = "{question}="  # pipeline.prompts: auto | chat | plain | a format string
    samples: int = 64  # n per problem
    ks: Optional[tuple[int, ...]] = None  # None = powers of two up to samples
    max_model_len: Optional[int] = None  # vLLM (None = the model's)
    threads: Optional[int] = None  # torch CPU threads (None = torch's default)
    out_dir: str = "data/eval/learner"
    gpus: PlannedGpus = field(default_factory=PlannedGpus)  # memory_gb: what --dry-run plans for

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [k for k, v in self.benchmarks.items() if not isinstance(k, str) or not isinstance(v, (str, type(None)))]
        if bad:
            raise ValueError(f"benchmarks.{bad[0]} must map a name to a file path or hub id")
        if not self.benchmark_files:
            raise ValueError("benchmarks is empty; give at least one name: path")
        if self.samples < 1:
            raise ValueError("samples must be ≥ 1")
        for k in self.ks or ():
            if not 1 <= k <= self.samples:
                raise ValueError(f"ks has k = {k} but only samples = {self.samples} per problem; "
                                 f"use 1 ≤ k ≤ {self.samples} or raise samples")

    @property
    def benchmark_files(self) -> dict[str, str]:
        """name → path, without the entries set to null."""
        return {k: v for k, v in self.benchmarks.items() if v}

    @property
    def k_values(self) -> list[int]:
        from pipeline.sample_score import powers_of_two

        return sorted(set(self.ks)) if self.ks else powers_of_two(self.samples)

    @property
    def label(self) -> str:
        from pathlib import PurePath

        return self.name or PurePath(self.out_dir).name

    def sampling(self, *, n: int | None = None, seed: int | None = None) -> SamplingParams:
        """The preset's values with this config's overrides applied."""
        return self.sampling_params(n=self.samples if n is None else n, max_new_tokens=self.max_new_tokens,
                                    seed=self.seed if seed is None else seed)
