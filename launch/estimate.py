"""Memory and time estimates for the paper's setting: a Qwen3-8B-Base learner on 8 × 80 GB GPUs.

    python launch/estimate.py [--mean-response 2048] [--gpus 8] [--gpu-gb 80] ...

Nothing here runs a model: the parameter count comes from Qwen3-8B's published config
instantiated on the meta device; memory is bytes per parameter / per token under the
settings README "Scaling out" recommends (FSDP2 over all GPUs, float32 master weights,
bfloat16 compute, gradient checkpointing, micro-batch 1, vLLM colocated at
`gpu_memory_utilization` and asleep while the learner trains). Times are bounds from
assumed hardware rates (--tflops, --mfu, --hbm-tbs), never measurements.
"""

from __future__ import annotations

import argparse

GB = 1e9

# Qwen/Qwen3-8B-Base config.json (the fields that set the size)
QWEN3_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False)


def parameter_counts(config: dict) -> tuple[int, int]:
    """(all parameters, those of the root FSDP unit: embeddings, final norm, head)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**config))
    total = sum(p.numel() for p in model.parameters())
    blocks = sum(p.numel() for p in model.model.layers.parameters())
    return total, total - blocks


def training_memory(n: int, root: int, layers: int, c: dict, a: argparse.Namespace) -> dict:
    """GB per GPU while the learner trains (vLLM asleep)."""
    block = (n - root) / layers
    tokens = a.micro_batch * (a.prompt_tokens + a.max_response)
    return {
        "fp32 weights + grads + Adam m, v (16 B/param, sharded)": 16 * n / a.gpus / GB,
        "reference model (fp32, sharded)": 4 * n / a.gpus / GB,
        "gathered: root unit bf16 weights + fp32 grads": 6 * root / GB,
        "gathered: 2 blocks bf16 weights + fp32 grads": 2 * 6 * block / GB,
        "checkpointed block inputs (bf16)": 2 * c["hidden_size"] * layers * tokens / GB,
        "one block recomputed (≈34·h B/token)": 34 * c["hidden_size"] * tokens / GB,
        # stage2_train.policy: the bf16 logits and their gradient; float32 work in ≤ 256 MiB chunks
        "logits bf16 + their grad (4 B/token/vocab)": 4 * c["vocab_size"] * tokens / GB,
        "loss head float32 chunks (3 × 256 MiB)": 3 * 2**28 / GB,
    }


def vllm_plan(n: int, c: dict, a: argparse.Namespace) -> dict:
    kv_token = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 2  # K and V, bf16
    weights = 2 * n / GB
    kv = a.vllm_fraction * a.gpu_gb - weights - a.vllm_overhead_gb
    seqs = kv * GB / kv_token / (a.prompt_tokens + a.max_response)
    ctx = a.prompt_tokens + a.mean_response / 2  # mean context over a response's decode steps
    step_s = (2 * n + seqs * ctx * kv_token) / (a.hbm_tbs * 1e12)  # one decode step reads weights + KV
    return {"kv_bytes_per_token": kv_token, "weights_gb": weights, "kv_gb": kv, "seqs": seqs,
            "tokens_per_s_roofline": seqs / step_s}


def rollout_tokens(a: argparse.Namespace) -> list[int]:
    """Online responses per step: prompts × G_s(i) for the paper's linear anneal."""
    from stage2_train.schedule import Schedule, anneal_rate, bank_count

    return [a.prompts * (a.group - bank_count(anneal_rate(i, schedule=Schedule.LINEAR, t_mix=a.t_mix), a.group))
            for i in range(1, a.steps + 1)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("gpus", 8), ("gpu-gb", 80.0), ("prompts", 1024), ("group", 16), ("steps", 16), ("t-mix", 8),
                          ("prompt-tokens", 200), ("max-response", 4096), ("mean-response", 2048), ("micro-batch", 1),
                          ("vllm-fraction", 0.65), ("vllm-overhead-gb", 2.0), ("tflops", 989.0), ("mfu", 0.4),
                          ("hbm-tbs", 3.35)]:
        p.add_argument(f"--{name}", type=type(default), default=default)
    a = p.parse_args(argv)
    n, root = parameter_counts(QWEN3_8B)
    layers = QWEN3_8B["num_hidden_layers"]
    print(f"Qwen3-8B: {n / 1e9:.3f} B parameters ({root / 1e9:.3f} B in embeddings + head); "
          f"{a.gpus} × {a.gpu_gb:.0f} GB, FSDP2, micro-batch {a.micro_batch} × "
          f"{a.prompt_tokens}+{a.max_response} tokens")
    train = training_memory(n, root, layers, QWEN3_8B, a)
    resident = sum(list(train.values())[:2])
    print("\nper GPU while the learner trains (vLLM asleep):")
    for k, v in train.items():
        print(f"  {k:<55} {v:6.1f} GB")
    print(f"  {'total':<55} {sum(train.values()):6.1f} GB")
    v = vllm_plan(n, QWEN3_8B, a)
    print(f"\nper GPU while vLLM samples (gpu_memory_utilization {a.vllm_fraction}):")
    print(f"  {'sharded training state + reference, resident':<55} {resident:6.1f} GB")
    print(f"  {'vLLM bf16 weights':<55} {v['weights_gb']:6.1f} GB")
    print(f"  {'vLLM KV cache ({:.0f} KiB/token)'.format(v['kv_bytes_per_token'] / 1024):<55} {v['kv_gb']:6.1f} GB"
          f"  = {v['seqs']:.0f} sequences of {a.prompt_tokens + a.max_response} tokens")
    print(f"  {'vLLM activations, CUDA graphs (assumed)':<55} {a.vllm_overhead_gb:6.1f} GB")
    print(f"  {'total':<55} {resident + a.vllm_fraction * a.gpu_gb:6.1f} GB")
    responses = rollout_tokens(a)
    gen = [r * a.mean_response for r in responses]
    print(f"\nrollouts at mean response {a.mean_response} tokens: online responses per step {responses}")
    print(f"  generated tokens: {gen[-1] / 1e6:.1f} M per fully online step, "
          f"{sum(gen) / 1e6:.0f} M over {a.steps} steps"
          f" ({sum(responses) / (a.prompts * a.group * a.steps):.2f} of plain GRPO's)")
    decode = a.gpus * v["tokens_per_s_roofline"]
    print(f"  decode roofline, {v['seqs']:.0f} sequences per GPU reading weights + KV from {a.hbm_tbs} TB/s HBM per "
          f"token: {decode:,.0f} tokens/s on {a.gpus} GPUs → {gen[-1] / decode / 60:.0f} min per fully online step")
    trained = a.prompts * a.group * (a.prompt_tokens + a.mean_response)
    flops = 12 * n * trained  # fwd+bwd 6N, recompute 2N, old and reference log-probs 2N each
    rate = a.gpus * a.tflops * 1e12 * a.mfu
    print(f"  training: {trained / 1e6:.1f} M tokens per step × 12·N FLOPs = {flops:.2e} FLOPs → "
          f"{flops / rate / 60:.0f} min at {a.mfu:.0%} of {a.tflops:.0f} TFLOP/s per GPU")


if __name__ == "__main__":
    main()
