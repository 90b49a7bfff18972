"""`PrepareConfig`: the `prepare` section of params.yaml (the testbed family recipe)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from pipeline.testbed.numerics import Numerics
from pipeline.testbed.sft import SFTSettings
from pipeline.testbed.task import TaskSpec


@dataclass(frozen=True)
class MemberRecipe:
    """One family member: its shape, how long it is fine-tuned, and its seed.

    `batch_size` and `lr`, when set, replace the shared `sft` block's for this member
    only. (Measured in docs/testbed.md: the learner on half-size batches at twice the
    rate trains in ~53% of the time, but its flaw lock and skill vary far more by seed.)
    """

    layers: int
    hidden: int
    sft_steps: int
    seed: int
    batch_size: Optional[int] = None
    lr: Optional[float] = None

    def __post_init__(self) -> None:
        from pipeline.testbed.model import HEAD_DIM

        if self.layers < 1 or self.sft_steps < 1:
            raise ValueError(f"layers ({self.layers}) and sft_steps ({self.sft_steps}) must be ≥ 1")
        if self.hidden < 2 * HEAD_DIM or self.hidden % (2 * HEAD_DIM):
            raise ValueError(f"hidden ({self.hidden}) must be a positive multiple of {2 * HEAD_DIM}, e.g. 64 or 128")
        if (self.batch_size is not None and self.batch_size < 1) or (self.lr is not None and not self.lr > 0):
            raise ValueError(f"batch_size ({self.batch_size}) must be ≥ 1 and lr ({self.lr}) > 0, or null for the "
                             "shared sft block's")

    def sft_settings(self, shared: SFTSettings) -> SFTSettings:
        """The shared SFT settings with this member's own batch size and learning rate, if set."""
        own = {k: v for k, v in (("batch_size", self.batch_size), ("lr", self.lr)) if v is not None}
        return dataclasses.replace(shared, **own)


@dataclass(frozen=True)
class PrepareConfig:
    """Everything `s2lpo prepare` needs to rebuild the family bit-for-bit.

    The learner is fine-tuned longer than the explorer so that it firmly absorbs the
    planted flaw (flaw-locked), while the explorer keeps correct answers on flawed
    problems in its support. The test split is stratified: `test_flawed` of its
    `test_size` problems are flawed, so both subsets are measured with enough
    problems; the train split keeps the natural flawed rate.
    """

    out_dir: str = "data/testbed"
    seed: int = 0
    train_size: int = 4096
    test_size: int = 256
    test_flawed: int = 64
    task: TaskSpec = field(default_factory=TaskSpec)
    sft: SFTSettings = field(default_factory=SFTSettings)
    explorer: MemberRecipe = MemberRecipe(layers=2, hidden=64, sft_steps=1500, seed=1)
    learner: MemberRecipe = MemberRecipe(layers=4, hidden=128, sft_steps=2400, seed=2)
    # an optional third member between explorer and learner (the explorer-size axis), e.g.
    # {layers: 2, hidden: 128, sft_steps: 1500, seed: 3}: half the learner's parameters, as 4B is of 8B
    medium: Optional[MemberRecipe] = None
    eval_samples: int = 16  # the family's own check (the lock); `evaluate@explorer|learner` draw the curve to n = 64
    eval_temperature: float = 1.0
    eval_max_new_tokens: int = 48
    numerics: Numerics = Numerics.NATIVE  # native | avx2 | compatible: which CPU kernels (pipeline/testbed/numerics.py)

    def __post_init__(self) -> None:
        if self.test_flawed > self.test_size:
            raise ValueError(f"test_flawed ({self.test_flawed}) exceeds test_size ({self.test_size})")
        if self.eval_samples < 1 or self.train_size < 1 or self.test_size < 1:
            raise ValueError("eval_samples, train_size and test_size must be ≥ 1")
