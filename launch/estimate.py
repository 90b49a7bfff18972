"""Memory and time estimates of a recipe's training run (default: the paper's setting,
recipes/qwen3-8b.yaml, a Qwen3-8B-Base learner on 8 × 80 GB GPUs).

    python launch/estimate.py [--params recipes/qwen3-8b.yaml] [--set KEY=VALUE ...]
                              [--mean-prompt 200] [--mean-response 2048] [--tflops 989] [--mfu 0.4] [--hbm-tbs 3.35]

A thin wrapper: the memory lines are `s2lpo train --dry-run`'s (pipeline.memory, from the
learner's config.json, no weights), the times are pipeline.throughput's bounds from assumed
hardware rates, never measurements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline import memory as mem  # noqa: E402
from pipeline.throughput import Rates, decode_tokens_per_s, training_seconds  # noqa: E402


def main(argv=None) -> None:
    from pipeline.config import load_stage_config
    from pipeline.model_configs import model_config
    from stage2_train.config import TrainConfig, alpha_at
    from stage2_train.plan import estimate, memory_report
    from stage2_train.schedule import bank_count

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="recipes/qwen3-8b.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    for name, default in [("mean-prompt", 200), ("mean-response", 2048), ("tflops", 989.0), ("mfu", 0.4),
                          ("hbm-tbs", 3.35)]:
        p.add_argument(f"--{name}", type=type(default), default=default)
    a = p.parse_args(argv)
    cfg = load_stage_config(TrainConfig, "train", params_path=a.params, overrides=a.overrides)
    report = memory_report(cfg, dry_run=True)
    if report is None:
        sys.exit("error: no GPUs declared in train.gpus and none seen; pass --set gpus.count=8 --set gpus.memory_gb=80")
    lines, error = report
    print("\n".join(lines))
    if error is not None:
        print(f"error: {error}")
    gpu = mem.GpuSpec(cfg.gpus.count or 1, cfg.gpus.memory_gb or 80.0)
    arch, params, _, plan = estimate(cfg, model_config(cfg.learner, revision=cfg.revision), gpu)
    prompts, g = cfg.prompts_per_step, cfg.group_size
    online = [prompts * (g - bank_count(alpha_at(cfg, i), g)) for i in range(1, cfg.steps + 1)]
    gen = [r * a.mean_response for r in online]
    print(f"\nrollouts at mean response {a.mean_response} tokens: online responses per step {online}")
    print(f"  generated tokens: {gen[-1] / 1e6:.1f} M per fully online step, {sum(gen) / 1e6:.0f} M over "
          f"{cfg.steps} steps ({sum(online) / (prompts * g * cfg.steps):.2f} of plain GRPO's)")
    if plan is not None:
        rate = gpu.count * decode_tokens_per_s(weights_bytes=plan.weights_gb * mem.GB,
                                               kv_bytes_per_token=plan.kv_bytes_per_token, seqs=plan.sequences,
                                               ctx=a.mean_prompt + a.mean_response / 2, hbm_tbs=a.hbm_tbs)
        print(f"  decode roofline, {plan.sequences:.0f} sequences per GPU reading weights + KV from {a.hbm_tbs} TB/s "
              f"HBM per token: {rate:,.0f} tokens/s on {gpu.count} GPUs → {gen[-1] / rate / 60:.0f} min per fully "
              "online step")
    tokens = prompts * g * (a.mean_prompt + a.mean_response)
    seconds = training_seconds(params=params.total, tokens=tokens, gpus=gpu.count,
                               rates=Rates(a.tflops, a.mfu, a.hbm_tbs))
    print(f"  training: {tokens / 1e6:.1f} M tokens per step × 12·N FLOPs = {12 * params.total * tokens:.2e} FLOPs → "
          f"{seconds / 60:.0f} min at {a.mfu:.0%} of {a.tflops:.0f} TFLOP/s per GPU")


if __name__ == "__main__":
    main()
