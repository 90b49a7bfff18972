"""`s2lpo explore`'s plan and memory check, from the config alone (no weights, no prompts read).

The check runs at the start of every explore worker, before the tokenizer or the engine
loads: the explorer's config.json (`pipeline.model_configs`) and the sampling settings
give vLLM's (or HF generate's) memory on this worker's GPUs (`pipeline.memory`), and a
configuration that cannot fit is refused in one line. `--dry-run` prints the plan and the
estimate for `explore.gpus.memory_gb` (else the GPU it sees) and stops; a hub dataset of
prompts is not loaded, so it runs offline.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.memory_check import refuse_if_unfit, sampling_report
from pipeline.model_configs import is_hub_id, model_config
from stage1_explore.config import ExploreConfig


def _report(cfg: ExploreConfig, *, dry_run: bool):
    from pipeline.engines import EngineKind, resolve_engine_kind

    return sampling_report(cfg.explorer, key="explore.explorer", stage="explore", revision=cfg.revision,
                           vllm=resolve_engine_kind(cfg.engine) is EngineKind.VLLM, dtype=cfg.dtype,
                           share=cfg.gpu_memory_utilization, tp=cfg.tensor_parallel_size, max_model_len=None,
                           max_new_tokens=cfg.max_new_tokens, hf_batch=cfg.generate_batch_size, planned=cfg.gpus,
                           dry_run=dry_run)


def check_memory(cfg: ExploreConfig) -> None:
    """The startup check against the GPU this worker sees (none: skipped)."""
    refuse_if_unfit(_report(cfg, dry_run=False))


def dry_run(cfg: ExploreConfig, *, worker_index: int = 0, num_workers: int = 1, echo=print) -> None:
    """Print what this worker would do and its per-GPU estimate; refuse (after printing) a plan that cannot fit."""
    mc = model_config(cfg.explorer, revision=cfg.revision, key="explore.explorer")
    prompts = "hub dataset, loaded at run time" if is_hub_id(cfg.prompts) else _count(cfg)
    bank = "present: only missing samples are generated" if (Path(cfg.bank) / "bank.json").is_file() else "new"
    for line in (f"explorer   {mc.describe()}; generation_config eos ids {list(mc.eos_token_ids)}",
                 f"prompts    {cfg.prompts} ({prompts}); worker {worker_index} of {num_workers}",
                 f"bank       {cfg.bank} ({bank}), {cfg.prompts_per_shard} prompts per shard",
                 f"sampling   M = {cfg.samples_per_prompt} per prompt, temperature {cfg.temperature}, top_p {cfg.top_p}"
                 f", top_k {cfg.top_k}, max_new_tokens {cfg.max_new_tokens}, seed {cfg.seed}",
                 f"engine     {cfg.engine.value} {cfg.dtype}, gpu_memory_utilization {cfg.gpu_memory_utilization}, "
                 f"tensor_parallel_size {cfg.tensor_parallel_size}"):
        echo(line)
    lines, error = _report(cfg, dry_run=True) or (
        ["memory     no GPU seen and none declared: set explore.gpus.memory_gb"], None)
    for line in lines:
        echo(line)
    if error is not None:
        raise error


def _count(cfg: ExploreConfig) -> str:
    if not Path(cfg.prompts).exists():
        return "not found"
    return f"{len(cfg.load_problems(cfg.prompts))} prompts"
