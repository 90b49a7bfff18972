"""Field groups shared by the stage configs: where prompts come from, how to sample, which engine.

`ExploreConfig`, `TrainConfig` and `EvaluateConfig` inherit the blocks they use, so a
setting such as `layout`, `top_p` or `gpu_memory_utilization` has one home, one comment
and one check here, while params.yaml keeps flat keys (`explore.layout`,
`train.temperature`, `evaluate.generate_batch_size`): inherited fields are ordinary
fields of the stage's dataclass. A stage whose default differs re-declares just that
field, with its own default and a comment saying why; it keeps the block's position and
check.

Blocks:
- `PromptSource`   how a prompt file or hub dataset is read (pipeline.data.load_problems);
- `Generation`     max_new_tokens, the sampling seed, extra stop tokens;
- `Sampling`       temperature, top-p, top-k as fixed values (explore, train's online rollouts);
- `PresetSampling` a named `Preset` with single-value overrides (evaluate, train's held-out eval);
- `EngineSettings` which engine samples, its batch, dtype and vLLM settings, the model revision;
- `Scoring`        the verifier's worker processes and timeout.

Each block checks its own fields in `__post_init__` and then calls the next block's
(cooperative `super()`), so a stage's own `__post_init__` starts with
`super().__post_init__()`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from pipeline.engines.base import EngineKind, SamplingParams

__all__ = ["EngineKind", "EngineSettings", "Generation", "Preset", "PresetSampling", "PresetValues",
           "PromptSource", "Sampling", "Scoring", "check_sampling"]


class _Checked:
    """The end of the `__post_init__` chain: blocks call `super().__post_init__()`."""

    def __post_init__(self) -> None:
        pass


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """The one check of a sampling triple (ValueError, reported as a one-line UserError)."""
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature > 0, 0 < top_p ≤ 1 and top_k ≥ 0 (top_k 0 = no filter)")


@dataclass(frozen=True)
class PromptSource(_Checked):
    """How the stage's prompt file or hub dataset becomes `Problem`s (pipeline.data)."""

    split: str = "train"  # hub datasets (and <split>-*.parquet directories) only
    layout: str = "auto"  # auto | qa | gsm8k | verl (see pipeline.data)
    question_field: Optional[str] = None  # dotted path overriding the layout's
    answer_field: Optional[str] = None
    id_field: Optional[str] = None  # None = the layout's; "" = question-hash ids
    limit: Optional[int] = None  # first N prompts after dedup (None = all)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be ≥ 1 (or null for all problems)")
        super().__post_init__()

    def load_problems(self, source: str) -> list:
        """`source`'s problems read with these settings (pipeline.data.load_problems)."""
        from pipeline.data import load_problems

        return load_problems(source, split=self.split, layout=self.layout, question_field=self.question_field,
                             answer_field=self.answer_field, id_field=self.id_field, limit=self.limit)


@dataclass(frozen=True)
class Generation(_Checked):
    """What bounds and seeds one sampled response, whatever the sampling distribution."""

    max_new_tokens: int = 48  # the testbed's answers are a few characters
    seed: int = 0  # the sampling seed (train: the whole run's: prompt order, initialisation, sampling)
    stop_token_ids: tuple[int, ...] = ()  # added to the model's eos ids (pipeline.engines.stops)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be ≥ 1")
        super().__post_init__()


@dataclass(frozen=True)
class Sampling(Generation):
    """A fixed sampling distribution. The defaults are the model's raw one (no filters)."""

    temperature: float = 1.0
    top_p: float = 1.0  # 1.0 = no nucleus filter
    top_k: int = 0  # 0 = no top-k filter

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p, self.top_k)
        super().__post_init__()

    def sampling_params(self, *, n: int = 1, seed: int) -> SamplingParams:
        """`SamplingParams` of this distribution for `n` samples per prompt, seeded `seed`."""
        return SamplingParams(n=n, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, seed=seed)


@dataclass(frozen=True)
class PresetValues:
    """The sampling knobs a preset fixes."""

    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float


class Preset(enum.Enum):
    """Named sampling settings for evaluation (`s2lpo evaluate` and train's held-out eval).

    - `qwen3-nothink`: the paper's evaluation sampling (METHOD §5), Qwen3's recommended
      non-thinking setting: temperature 0.7, top-p 0.8, top-k 20, presence penalty 1.5.
    - `plain`: the model's raw distribution (temperature 1.0, no filters, no penalty), as
      the testbed's `prepare` and the trainer's periodic evaluation sample by default.
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
class PresetSampling(_Checked):
    """Sampling by `preset`; `temperature`, `top_p`, `top_k` and `presence_penalty`
    override single values of it when set (None = the preset's)."""

    preset: Preset = Preset.PLAIN
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    presence_penalty: Optional[float] = None  # subtracted from the logit of each token already in the response

    def __post_init__(self) -> None:
        v = self.sampling_values()
        check_sampling(v.temperature, v.top_p, v.top_k)
        super().__post_init__()

    def sampling_values(self) -> PresetValues:
        """The preset's values with this block's overrides applied."""
        base = self.preset.values

        def pick(override, default):
            return default if override is None else override

        return PresetValues(temperature=float(pick(self.temperature, base.temperature)),
                            top_p=float(pick(self.top_p, base.top_p)), top_k=int(pick(self.top_k, base.top_k)),
                            presence_penalty=float(pick(self.presence_penalty, base.presence_penalty)))

    def sampling_params(self, *, n: int, max_new_tokens: int, seed: int) -> SamplingParams:
        """`SamplingParams` of `sampling_values()` for `n` samples per prompt."""
        v = self.sampling_values()
        return SamplingParams(n=n, temperature=v.temperature, top_p=v.top_p, top_k=v.top_k,
                              presence_penalty=v.presence_penalty, max_new_tokens=max_new_tokens, seed=seed)


@dataclass(frozen=True)
class EngineSettings(_Checked):
    """Which engine samples the stage's model, and how it is loaded.

    `generate_batch_size` is the HF engine's: sequences (prompts × n) per `generate` call;
    vLLM schedules its own batches and only sees that many sequences per call."""

    engine: EngineKind = EngineKind.AUTO  # auto = vLLM on a CUDA GPU when installed, else HF generate
    generate_batch_size: int = 2048  # sequences per HF generate call (lower it when the KV cache does not fit)
    revision: Optional[str] = None  # the model's hub revision (branch, tag or commit)
    dtype: str = "auto"  # the weights' dtype: auto = the checkpoint's
    gpu_memory_utilization: float = 0.85  # vLLM's share of the GPU (weights + KV cache); on CPU, of the RAM
    tensor_parallel_size: int = 1  # vLLM
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.generate_batch_size < 1 or self.tensor_parallel_size < 1:
            raise ValueError("generate_batch_size and tensor_parallel_size must be ≥ 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization is a share: need 0 < gpu_memory_utilization ≤ 1")
        super().__post_init__()


@dataclass(frozen=True)
class Scoring(_Checked):
    """The verifier (pipeline.scoring_pool): worker processes with a hard timeout each."""

    scoring_workers: int = 2  # verifier processes with a hard timeout; 0 = in this process (trusted output)
    score_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.scoring_workers < 0 or self.score_timeout_s <= 0:
            raise ValueError("need scoring_workers ≥ 0 and score_timeout_s > 0")
        super().__post_init__()
