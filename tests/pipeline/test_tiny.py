"""`pipeline.tiny`: a real architecture's interface at 1 layer × 64."""

import pytest
import torch

from pipeline.tiny import tiny_config, tiny_model_from_config


def qwen3_8b_base(**kw):
    from transformers import Qwen3Config

    # Qwen3-8B-Base's public config.json numbers
    return Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
                       bos_token_id=151643, eos_token_id=151643, max_window_layers=36, **kw)


def test_shrinks_depth_and_width_and_keeps_the_interface():
    real = qwen3_8b_base()
    tiny = tiny_config(real, layers=2, hidden=128)
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.intermediate_size) == (2, 128, 256)
    assert (tiny.num_attention_heads, tiny.num_key_value_heads, tiny.head_dim) == (4, 1, 32)  # 32:8 = 4:1 kept
    assert tiny.layer_types == ["full_attention"] * 2 and tiny.max_window_layers == 2
    keep = ("model_type", "vocab_size", "bos_token_id", "eos_token_id", "tie_word_embeddings", "rope_parameters",
            "max_position_embeddings", "rms_norm_eps", "hidden_act")
    assert {k: getattr(tiny, k) for k in keep} == {k: getattr(real, k) for k in keep}
    assert real.num_hidden_layers == 36 and real.hidden_size == 4096  # the original is not touched
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_config(real, hidden=48)


def test_builds_a_seeded_model_with_the_generation_config():
    from transformers import GenerationConfig

    cfg = qwen3_8b_base(pad_token_id=None)
    cfg.vocab_size = 1000  # a small vocabulary keeps this test fast; the real one is tested in engines/test_stops
    gen = GenerationConfig(eos_token_id=[7, 9])
    a = tiny_model_from_config(cfg, seed=1, generation_config=gen)
    b = tiny_model_from_config(cfg, seed=1)
    assert a.generation_config.eos_token_id == [7, 9] and not a.training
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.lm_head.weight.data_ptr() != a.model.embed_tokens.weight.data_ptr()  # untied, as the 8B is
    assert a(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 1000)


def test_mixture_of_experts_keeps_at_most_four_experts():
    from transformers import Qwen3MoeConfig

    real = Qwen3MoeConfig(vocab_size=1000, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
                          num_hidden_layers=48, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4)
    tiny = tiny_config(real)
    assert (tiny.num_experts, tiny.num_experts_per_tok, tiny.moe_intermediate_size) == (4, 4, 64)
    model = tiny_model_from_config(real)
    assert model(torch.tensor([[1, 2]])).logits.shape == (1, 2, 1000)
