"""The shell around `pipeline.memory`: which GPUs to check against, and the sampling
stages' (explore, evaluate) check and report. Stage 2's is `stage2_train.plan`.

A real run checks against the GPUs it sees and skips the check without CUDA; a dry run
uses the stage's `gpus` setting where set. Only config.json is read, never weights.
"""

from __future__ import annotations

from typing import Optional

from pipeline import memory as mem
from pipeline.errors import UserError
from pipeline.memory import GB, GpuSpec, PlannedGpus


def gpus_for(planned: PlannedGpus, *, dry_run: bool, ranks: Optional[int] = None) -> Optional[GpuSpec]:
    """The GPUs to check against: for a real run those CUDA shows (`ranks` of this device's
    memory), None without CUDA; for a dry run `planned` where set, else what CUDA shows."""
    if dry_run and planned.count and planned.memory_gb:
        return GpuSpec(planned.count, planned.memory_gb, "declared in gpus")
    import torch

    cuda = torch.cuda.is_available()
    seen = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GB if cuda else None
    if not dry_run:
        return GpuSpec(ranks or 1, seen, "seen") if cuda else None
    count = planned.count or ranks or (torch.cuda.device_count() if cuda else 1)
    memory = planned.memory_gb or seen
    if memory is None:
        return None
    return GpuSpec(count, memory, "declared in gpus" if planned.memory_gb else "seen")


def sampling_report(model: str, *, key: str, stage: str, revision: Optional[str], vllm: bool, dtype: str,
                    share: float, tp: int, max_model_len: Optional[int], max_new_tokens: int, hf_batch: int,
                    planned: PlannedGpus, dry_run: bool) -> Optional[tuple[list[str], Optional[UserError]]]:
    """(estimate lines, refusal or None) for a stage that only samples; None: nothing to check against."""
    from pipeline.model_configs import model_config

    gpu = gpus_for(PlannedGpus(tp, planned.memory_gb), dry_run=dry_run, ranks=tp)
    if gpu is None:
        return None
    mc = model_config(model, revision=revision, key=key)
    arch = mem.Arch.from_config(mc.config, where=f"{mc.where}/config.json")
    if arch is None:
        return [f"memory     no estimate for model_type {mc.config.get('model_type')!r} (dense Qwen/Llama only)"], None
    params = mem.parameter_counts(arch)
    row = mem.PROMPT_TOKENS + max_new_tokens
    v = mem.VllmSettings(share=share, dtype=dtype, tp=tp, max_model_len=max_model_len)
    phases = mem.sampling_phases(arch, params, engine_vllm=vllm, v=v, gpu=gpu, row_tokens=row, hf_dtype=dtype,
                                 hf_batch=hf_batch)
    lines = [f"memory     per GPU on {gpu.count} × {gpu.memory_gb:.0f} GB ({gpu.source}); {mc.name}: "
             f"{params.total / 1e9:.3f} B parameters; rows of ≤ {mem.PROMPT_TOKENS} prompt (assumed) + "
             f"{max_new_tokens} response tokens:", *mem.format_phases(phases, gpu)]
    plan = mem.vllm_plan(arch, params, v, gpu, row_tokens=row) if vllm else None
    if plan is not None:
        lines.append("  " + mem.format_vllm(plan))
    try:
        if plan is not None:  # vLLM refuses to start first
            mem.check_vllm(plan, v, stage=stage)
        mem.check_fits(phases, gpu, stage=stage)
    except UserError as exc:
        return lines, exc
    return lines, None


def refuse_if_unfit(report: Optional[tuple[list[str], Optional[UserError]]]) -> None:
    """The startup check: raise the report's refusal, if any."""
    if report is not None and report[1] is not None:
        raise report[1]
