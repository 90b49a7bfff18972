"""`setup`: everything a run needs before its first step, and the refusals that come first.

In order: the training prompts; the learner (and its KL reference); the bank, checked
against the learner (pipeline.bank.for_training: tokenizer, template, prompts, stop set,
log-prob convention), which also settles the prompt template — the bank is its home, so a
run that leaves `train.template` unset renders with the bank's, and one that sets another
is refused; the prompts rendered and tokenised once; the learner placed on its ranks with
its optimizer; the rollout engine and the verifier. It returns the typed `Run`
(stage2_train.context) whose `cfg.template` is the resolved template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.errors import UserError
from pipeline.verifier import Scorer
from stage2_train import rl_math
from stage2_train.config import TrainConfig
from stage2_train.context import Learner, Rollouts, Run
from stage2_train.distributed import Dist, prepare_models
from stage2_train.groups import eligible_pool
from stage2_train.schedule import bank_count
from stage2_train.step import alpha_at

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.bank.for_training import TrainingBank
    from pipeline.data import Problem

NO_BANK_TEMPLATE = "{question}="  # what an unset train.template means with bank: null


def setup(cfg: TrainConfig, d: Dist = Dist(), *, echo: Callable[[str], None] = print) -> Run:
    if d.world_size > cfg.prompts_per_step:
        raise UserError(f"prompts_per_step {cfg.prompts_per_step} is fewer than the {d.world_size} torchrun processes; "
                        "every rank needs at least one prompt (raise prompts_per_step or launch fewer processes)")
    from pipeline.prompts import encode_prompts, render_problems
    from stage2_train.learner import load_learner
    from stage2_train.rollout_engines import build_engine

    problems = cfg.load_problems(cfg.prompts)
    torch.manual_seed(cfg.seed)
    tokenizer, model, ref_model = load_learner(cfg)
    bank = open_training_bank(cfg, tokenizer, problems, echo=echo) if _reads_bank(cfg) else None
    template = bank.template if bank is not None else unread_bank_template(cfg)
    cfg = dataclasses.replace(cfg, template=template)
    prompt_ids = encode_prompts(tokenizer, render_problems(tokenizer, problems, template=template), template=template)
    learner = _place_learner(cfg, d, tokenizer, model, ref_model)
    rollouts = Rollouts(build_engine(cfg, learner.model, tokenizer, d), make_scorer(cfg), problems, prompt_ids)
    if bank is not None:
        _attach_bank(cfg, rollouts, bank, echo=echo)
    g_w = [bank_count(alpha_at(cfg, i), cfg.group_size) for i in range(1, cfg.steps + 1)]
    where = f" on {d.world_size} ranks ({d.strategy.value})" if d.active else ""
    echo(f"train: {len(rollouts.problems)} prompts, {cfg.steps} steps × {cfg.prompts_per_step} prompts × "
         f"G={cfg.group_size}{where}; bank share G_w per step {g_w[:3]}…{g_w[-1:]}; "
         f"{sum(p.numel() for p in learner.trainable):,} trainable parameters")
    return Run(cfg, learner, rollouts, Path(cfg.out_dir), dist=d)


def unread_bank_template(cfg: TrainConfig) -> str:
    """The template of a run that draws no bank rows: the one set, else its bank's (so a GRPO
    baseline pointed at the S2L-PO arm's bank renders its prompts alike), else NO_BANK_TEMPLATE."""
    if cfg.template is not None:
        return cfg.template
    if cfg.bank is None:
        return NO_BANK_TEMPLATE
    from pipeline.bank.for_training import bank_template
    from pipeline.bank.store import open_bank

    return bank_template(open_bank(cfg.bank).identity)


def _reads_bank(cfg: TrainConfig) -> bool:
    """Whether the run opens its bank: for rows (α > 0 at some step) or for the pass band."""
    return cfg.uses_bank or cfg.bank_pass_band is not None


def open_training_bank(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, problems: list[Problem], *,
                       echo: Callable[[str], None] = print) -> TrainingBank:
    """`cfg.bank` opened for this learner (pipeline.bank.for_training.open_bank_for)."""
    from pipeline.bank.for_training import open_bank_for
    from stage2_train.rollout_engines import learner_stop_ids

    correction = rl_math.BANK_CORRECTIONS[cfg.loss.bank_correction]
    return open_bank_for(cfg.bank, tokenizer=tokenizer, template=cfg.template, problems=problems,
                         prompts=cfg.prompts, stops=learner_stop_ids(cfg, tokenizer),
                         truncated_is=correction.uses_explorer_logprobs, truncated_reward=cfg.truncated_reward,
                         echo=echo)


def _place_learner(cfg: TrainConfig, d: Dist, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel,
                   ref_model: PreTrainedModel | None) -> Learner:
    """The learner on this rank's device (wrapped or sharded for DDP/FSDP) with its AdamW."""
    if cfg.gradient_checkpointing:  # keeps one block's activations instead of all of them
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ds = cfg.distributed
    train_model, model, ref_model = prepare_models(model, ref_model, d, param_dtype=ds.param_dtype,
                                                   reshard_after_forward=ds.reshard_after_forward)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    return Learner(model, train_model, trainable, optimizer, tokenizer, ref_model)


def _attach_bank(cfg: TrainConfig, rollouts: Rollouts, bank: TrainingBank, *, echo: Callable[[str], None]) -> None:
    """The bank's eligible rows as the draw pool (its first row's prompt ids checked now);
    with a pass band, only the band's prompts; a run that draws no rows closes it again."""
    from pipeline.bank.for_training import check_first_prompt

    rollouts.reader, rollouts.rescorer = bank.reader, rollouts.scorer if bank.rescore else None
    rollouts.pool = eligible_pool(bank.reader.pool, bank.reader.correct, cfg.bank_rows)
    check_first_prompt(bank.reader, rollouts.pool, rollouts.problems, rollouts.prompt_ids, bank=str(cfg.bank))
    if cfg.bank_pass_band is not None:
        from stage2_train.difficulty import apply_pass_band

        apply_pass_band(rollouts, cfg.bank_pass_band, echo=echo)
        if not cfg.uses_bank:  # GRPO on the band: the bank chose the prompts and is not read again
            bank.reader.close()
            rollouts.reader, rollouts.rescorer, rollouts.pool = None, None, {}


def make_scorer(cfg: TrainConfig) -> Scorer:
    """The one verifier of the run, for online responses and re-scored bank rows alike."""
    from pipeline.scoring_pool import ScoringPool

    return ScoringPool(cfg.scoring_workers, timeout_s=cfg.score_timeout_s).score
