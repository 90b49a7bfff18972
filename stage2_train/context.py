"""What a training step is given, in three typed records built by `stage2_train.setup_run`:

- `Learner`: the policy being trained (π_θ), what the loss runs through, its optimizer,
  and the frozen KL reference π_ref (the initial learner);
- `Rollouts`: what fills the groups — the rollout engine (the learner sampling online),
  the verifier, the bank (explorer rows, drawn from `pool`) and the prompts;
- `Run`: the run itself — its config, its place among the ranks, where it writes, and
  its running totals.

The step reads these and nothing else: it never calls back into the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from stage2_train.distributed import Dist
from stage2_train.policy import Packed, batched_logprobs

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.bank.reader import BankReader
    from pipeline.data import Problem
    from pipeline.verifier import Scorer
    from stage2_train.config import TrainConfig
    from stage2_train.rollout_engines import RolloutEngine


@dataclass
class Learner:
    """π_θ and what trains it. `model` is the learner itself (a peft model under LoRA);
    `train_model` what the loss runs through (the learner, or its DDP wrapper); `trainable`
    the parameters AdamW updates; `reference` π_ref, None under LoRA (the base model with the
    adapter disabled is the reference) or without a KL term."""

    model: PreTrainedModel | PeftModel
    train_model: torch.nn.Module
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    tokenizer: PreTrainedTokenizerBase
    reference: PreTrainedModel | None = None

    def reference_logprobs(self, batch: Packed, micro_batch_size: int, *, calls: int = 0) -> torch.Tensor:
        """log π_ref of every row's tokens (N, W−1), without gradients."""
        if self.reference is not None:
            return batched_logprobs(self.reference, batch, micro_batch_size, calls=calls)
        with self.model.disable_adapter():  # LoRA: the reference is the base model
            return batched_logprobs(self.model, batch, micro_batch_size, calls=calls)


@dataclass
class Rollouts:
    """What a step's groups are made from. `problems[i]` is rendered and tokenised as
    `prompt_ids[i]` (the learner's encoding, which every drawn bank row must store);
    `pool` maps a prompt id to its eligible bank row positions in `reader` (empty without
    a bank); `rescorer` re-scores drawn bank rows (None: their cached rewards stand)."""

    engine: RolloutEngine
    scorer: Scorer
    problems: list[Problem]
    prompt_ids: list[list[int]]
    reader: BankReader | None = None
    pool: dict[str, np.ndarray] = field(default_factory=dict)
    rescorer: Scorer | None = None


@dataclass
class Run:
    """One training run: `cfg` with its template resolved (the bank's when unset), this
    process's `dist`, the `out` directory, the tokens the learner generated so far on all
    ranks (discarded ones included), and the last checkpoint written (None: none yet)."""

    cfg: TrainConfig
    learner: Learner
    rollouts: Rollouts
    out: Path
    dist: Dist = field(default_factory=Dist)
    online_tokens: int = 0  # the metric and checkpoint key of the same name
    last_checkpoint: str | None = None
