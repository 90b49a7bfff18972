"""Model configs of the testbed family: one Qwen3 architecture, two sizes.

Qwen3 configs load in transformers and vLLM alike. Both sizes use tied embeddings,
grouped-query attention with half as many key/value heads as query heads, an MLP
4× the hidden size and head_dim 32 (a size vLLM's CPU attention supports).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.testbed.tokenizer import VOCAB_SIZE

HEAD_DIM = 32


@dataclass(frozen=True)
class ModelShape:
    """Depth and width of one family member."""

    layers: int
    hidden: int


def qwen3_config(shape: ModelShape, tokenizer, *, max_positions: int = 128):
    """A `Qwen3Config` of the given shape for the testbed tokenizer."""
    from transformers import Qwen3Config

    if shape.hidden % (2 * HEAD_DIM):
        raise ValueError(f"hidden must be a multiple of {2 * HEAD_DIM}, got {shape.hidden}")
    heads = shape.hidden // HEAD_DIM
    return Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=4 * shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        head_dim=HEAD_DIM,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(shape: ModelShape, tokenizer, *, seed: int):
    """A freshly initialised `Qwen3ForCausalLM` (fp32) with a seeded init."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(qwen3_config(shape, tokenizer))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
