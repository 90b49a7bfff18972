"""`s2lpo train`'s plan and memory check, from the config alone (no weights, no prompts read).

`check_memory` runs at the start of every training run, before anything loads: from the
learner's config.json (`pipeline.model_configs`) and the train settings it estimates each
phase's GPU memory per rank (`pipeline.memory`) and refuses, in one line naming the
biggest term and its fix, a configuration that cannot fit the GPUs this process sees
(torchrun's WORLD_SIZE ranks of this device's memory; skipped without CUDA). `--dry-run`
prints the plan and the same estimate for the GPUs declared in `train.gpus` (else those
it sees), then stops: hub datasets and the bank are not opened, so it runs offline.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

from pipeline import memory as mem
from pipeline.errors import UserError
from pipeline.memory_check import gpus_for
from pipeline.model_configs import ModelConfig, is_hub_id, model_config
from stage2_train.config import TrainConfig

_HUB_DATASET = "hub dataset, loaded at run time"


def learner_settings(cfg: TrainConfig, arch: mem.Arch, *, ranks: int = 1) -> mem.LearnerSettings:
    from pipeline.engines import EngineKind, resolve_engine_kind
    from stage2_train.distributed import Strategy

    vllm = mem.VllmSettings(share=cfg.gpu_memory_utilization, dtype=cfg.rollout_dtype or cfg.dtype,
                            tp=cfg.tensor_parallel_size, sleep_level=cfg.vllm_sleep_level)
    return mem.LearnerSettings(
        dtype=cfg.dtype, param_dtype=cfg.distributed.param_dtype, fsdp=cfg.distributed.strategy is Strategy.FSDP,
        lora_r=cfg.lora.r, lora_params=mem.lora_parameters(arch, cfg.lora.r, cfg.lora.target_modules),
        reference=cfg.loss.kl_coef > 0 and cfg.lora.r == 0, gradient_checkpointing=cfg.gradient_checkpointing,
        micro_batch=cfg.micro_batch_size, row_tokens=mem.PROMPT_TOKENS + cfg.max_new_tokens,
        engine_vllm=resolve_engine_kind(cfg.engine) is EngineKind.VLLM, vllm=vllm,
        hf_batch=min(cfg.generate_batch_size, -(-cfg.prompts_per_step // ranks) * cfg.group_size),
        rows_per_rank=-(-cfg.prompts_per_step // ranks) * cfg.group_size)


def estimate(cfg: TrainConfig, mc: ModelConfig, gpu: mem.GpuSpec):
    """(arch, params, phases, vLLM plan or None); arch None for a model type not covered."""
    arch = mem.Arch.from_config(mc.config, where=f"{mc.where}/config.json")
    if arch is None:
        return None, None, [], None
    params = mem.parameter_counts(arch)
    s = learner_settings(cfg, arch, ranks=gpu.count)
    if s.fsdp and gpu.count < 2:  # one process: FSDP is not applied (stage2_train.distributed)
        s = dataclasses.replace(s, fsdp=False)
    phases = mem.train_phases(arch, params, s, gpu)
    plan = mem.vllm_plan(arch, params, s.vllm, gpu, row_tokens=s.row_tokens) if s.engine_vllm else None
    return arch, params, phases, plan


def memory_report(cfg: TrainConfig, *, dry_run: bool = False) -> Optional[tuple[list[str], Optional[UserError]]]:
    """(the estimate's lines, the refusal or None), or None where there is nothing to check
    against (no CUDA, nothing declared)."""
    ranks = int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None  # torchrun's
    gpu = gpus_for(cfg.gpus, dry_run=dry_run, ranks=ranks)
    if gpu is None:
        return None
    mc = model_config(cfg.learner, revision=cfg.revision, key="train.learner")
    arch, params, phases, plan = estimate(cfg, mc, gpu)
    if arch is None:
        return [f"memory    no estimate for model_type {mc.config.get('model_type')!r} (dense Qwen/Llama only)"], None
    lines = [f"memory per GPU on {gpu.count} × {gpu.memory_gb:.0f} GB ({gpu.source}); rows of ≤ "
             f"{mem.PROMPT_TOKENS} prompt (assumed) + {cfg.max_new_tokens} response tokens:",
             *mem.format_phases(phases, gpu)]
    if plan is not None:
        lines.append("  " + mem.format_vllm(plan))
    peak = max(phases, key=lambda ph: ph.total)
    lines.append(f"  peak {peak.total:.1f} GB per GPU {peak.phase.value}, of {gpu.memory_gb:.0f} GB")
    lines.append("  " + _host_ram(cfg, params, gpu))
    try:
        _check(phases, plan, cfg, gpu)
    except UserError as exc:
        return lines, exc
    return lines, None


def check_memory(cfg: TrainConfig) -> None:
    """The startup check: refuse a configuration that cannot fit the GPUs this process sees."""
    report = memory_report(cfg)
    if report is not None and report[1] is not None:
        raise report[1]


def _check(phases, plan, cfg: TrainConfig, gpu: mem.GpuSpec) -> None:
    if plan is not None:  # vLLM refuses to start first
        v = mem.VllmSettings(cfg.gpu_memory_utilization, cfg.rollout_dtype or cfg.dtype)
        mem.check_vllm(plan, v, stage="train", dtype_key="rollout_dtype")
    mem.check_fits(phases, gpu, stage="train")


def _host_ram(cfg: TrainConfig, params: mem.Params, gpu: mem.GpuSpec) -> str:
    b = mem.BYTES.get(cfg.dtype, 4)
    copies = 1 + (cfg.loss.kl_coef > 0 and cfg.lora.r == 0)
    per_rank = copies * b * params.total / mem.GB
    offloaded = params.total * mem.BYTES.get(cfg.rollout_dtype or cfg.dtype, 4) / mem.GB
    sleep = (f"; vllm_sleep_level 1 keeps {offloaded:.1f} GB of weights per rank in host RAM"
             if cfg.vllm_sleep_level == 1 else "")
    return (f"host RAM at start-up: each rank loads {copies} {cfg.dtype} cop{'ies' if copies > 1 else 'y'} "
            f"({per_rank:.1f} GB) before sharding, {per_rank * gpu.count:.0f} GB for {gpu.count} ranks{sleep}")


def format_plan(cfg: TrainConfig, mc: ModelConfig) -> list[str]:
    """What the run will do, from the config alone."""
    from stage2_train.config import alpha_at
    from stage2_train.schedule import bank_count

    arch = mem.Arch.from_config(mc.config, where=mc.where)
    size = ""
    if arch is not None:
        p = mem.parameter_counts(arch)
        size = f": {arch.model_type}, {p.total / 1e9:.3f} B parameters ({p.root / 1e9:.3f} B in embeddings + head)"
    g_w = [bank_count(alpha_at(cfg, i), cfg.group_size) for i in range(1, cfg.steps + 1)]
    responses = cfg.prompts_per_step * cfg.group_size
    ds = cfg.distributed
    return [
        f"learner   {mc.describe()}{size}; generation_config eos ids {list(mc.eos_token_ids)}",
        f"prompts   {cfg.prompts} ({_prompts_note(cfg)})",
        f"bank      {cfg.bank} ({_bank_note(cfg.bank)})" if cfg.bank else "bank      none (plain GRPO)",
        f"steps     {cfg.steps} × {cfg.prompts_per_step} prompts × G = {cfg.group_size} = {responses} responses per "
        f"step; bank share G_w per step {' '.join(map(str, g_w))}",
        f"updates   mini-batches of {cfg.mini_batch_size} ({math.ceil(responses / cfg.mini_batch_size)} optimizer "
        f"steps per step × ppo_epochs {cfg.ppo_epochs}), micro-batches of {cfg.micro_batch_size}, lr {cfg.lr}",
        f"training  {ds.strategy.value}, {cfg.dtype} master weights, {ds.param_dtype or cfg.dtype} compute, gradient "
        f"checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, "
        + ("full fine-tuning" if cfg.lora.r == 0 else f"LoRA r = {cfg.lora.r}")
        + (f", reference model (kl_coef {cfg.loss.kl_coef})" if cfg.loss.kl_coef > 0 and cfg.lora.r == 0 else ""),
        f"engine    {cfg.engine.value} {cfg.rollout_dtype or cfg.dtype}, gpu_memory_utilization "
        f"{cfg.gpu_memory_utilization}, tensor_parallel_size {cfg.tensor_parallel_size}, vllm_sleep_level "
        f"{cfg.vllm_sleep_level}",
        f"outputs   {cfg.out_dir} (checkpoint " + (f"every {cfg.checkpoint_every} steps" if cfg.checkpoint_every else
        "at the end only") + f", keep {cfg.keep_checkpoints})",
    ]


def _prompts_note(cfg: TrainConfig) -> str:
    if not Path(cfg.prompts).exists():
        return _HUB_DATASET if is_hub_id(cfg.prompts) else "not found"
    return f"{len(cfg.load_problems(cfg.prompts))} prompts"


def _bank_note(bank: str) -> str:
    if "://" in bank:
        return "remote, opened at run time"
    return "present" if (Path(bank) / "bank.json").is_file() else "not filled yet: run s2lpo explore first"


def dry_run(cfg: TrainConfig, *, echo=print) -> None:
    """Print the plan and the per-GPU estimate; refuse (after printing) a plan that cannot fit."""
    mc = model_config(cfg.learner, revision=cfg.revision, key="train.learner")
    for line in format_plan(cfg, mc):
        echo(line)
    lines, error = memory_report(cfg, dry_run=True) or (
        ["memory    no GPU seen and none declared: set train.gpus.count and train.gpus.memory_gb"], None)
    for line in lines:
        echo(line)
    if error is not None:
        raise error
