"""Tiny random-weight stand-ins of real models: same architecture and tokenizer, shrunk.

A rehearsal (or a test) runs a real model's *interface* on a CPU: its `model_type`,
vocabulary size, special token ids, stop ids (the generation config), rope settings,
context length and tie setting, with a handful of layers and a narrow width. Weights are
random (seeded), so what it emits is noise over the real vocabulary — exactly what shakes
out tokenizer, stop-token and special-token handling.

    from transformers import AutoConfig, GenerationConfig
    config = AutoConfig.from_pretrained("Qwen/Qwen3-8B-Base")          # config.json only
    model = tiny_model_from_config(config, layers=1, hidden=64, seed=0,
                                   generation_config=GenerationConfig.from_pretrained(...))
    save_tiny_model(model, tokenizer, "out/tiny-qwen3-8b")            # loads like the real one

What changes: the depth (`num_hidden_layers`, and per-layer lists such as `layer_types`
cut to it), the width (`hidden_size`, `intermediate_size` = 2 × hidden, attention heads of
`head_dim` 32 — a size vLLM's CPU attention supports — with the original query/key-value
head ratio where it divides), the expert count of a mixture-of-experts config (at most 4),
and the dtype (float32). Everything else is copied.
"""

from __future__ import annotations

import copy

TINY_HEAD_DIM = 32
TINY_EXPERTS = 4


def tiny_config(config, *, layers: int = 1, hidden: int = 64):
    """A copy of `config` (a `PretrainedConfig`) shrunk to `layers` × `hidden`."""
    if layers < 1 or hidden < TINY_HEAD_DIM or hidden % TINY_HEAD_DIM:
        raise ValueError(f"need layers ≥ 1 and hidden a positive multiple of {TINY_HEAD_DIM}, "
                         f"got layers={layers}, hidden={hidden}")
    tiny = copy.deepcopy(config)
    heads = hidden // TINY_HEAD_DIM
    q_heads = getattr(config, "num_attention_heads", None) or heads
    kv_heads = getattr(config, "num_key_value_heads", None) or q_heads
    ratio = max(1, q_heads // kv_heads)
    updates = {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // ratio if heads % ratio == 0 and heads >= ratio else heads,
        "head_dim": TINY_HEAD_DIM,
        "dtype": "float32",
    }
    if getattr(config, "num_experts", None):  # mixture of experts (Qwen3-MoE and kin)
        updates["num_experts"] = min(config.num_experts, TINY_EXPERTS)
        updates["num_experts_per_tok"] = min(getattr(config, "num_experts_per_tok", 1), updates["num_experts"])
        updates["moe_intermediate_size"] = hidden
    for key, value in updates.items():
        setattr(tiny, key, value)
    if isinstance(getattr(config, "layer_types", None), (list, tuple)):
        tiny.layer_types = list(config.layer_types)[:layers]
    if getattr(config, "max_window_layers", None) is not None:
        tiny.max_window_layers = min(config.max_window_layers, layers)
    return tiny


def tiny_model_from_config(config, *, layers: int = 1, hidden: int = 64, seed: int = 0, generation_config=None):
    """A randomly initialised causal LM of `config`'s architecture shrunk by `tiny_config`
    (float32, eval mode, seeded init). `generation_config` (the real model's, carrying its
    stop ids) is attached when given; otherwise transformers derives one from `config`."""
    import torch
    from transformers import AutoModelForCausalLM

    shrunk = tiny_config(config, layers=layers, hidden=hidden)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(shrunk, dtype=torch.float32)
    if generation_config is not None:
        model.generation_config = copy.deepcopy(generation_config)
    return model.eval()


def save_tiny_model(model, tokenizer, out_dir) -> None:
    """Write `model` (safetensors, config, generation config) and `tokenizer` to `out_dir`,
    a directory every stage loads like the real model's."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
