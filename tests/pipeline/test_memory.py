"""`pipeline.memory`: exact parameter counts, the terms of each phase by hand, and the refusals."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import memory as mem
from pipeline.errors import UserError
from pipeline.model_configs import model_config

QWEN3 = ("Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-4B-Base", "Qwen/Qwen3-8B-Base", "Qwen/Qwen3-14B-Base")


def _meta_counts(config: dict) -> tuple[int, int, int]:
    """(total, root unit, one block) of the model transformers builds on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    blocks = sum(p.numel() for p in model.model.layers.parameters())
    return total, total - blocks, blocks // cfg.num_hidden_layers


@pytest.mark.parametrize("name", QWEN3)
def test_parameter_counts_equal_the_model_transformers_builds(name):
    config = model_config(name).config
    p = mem.parameter_counts(mem.Arch.from_config(config))
    assert (p.total, p.root, p.block) == _meta_counts(config)


@pytest.mark.parametrize("model_type, extra", [("qwen2", {}), ("llama", {"head_dim": 32}),
                                                ("mistral", {"tie_word_embeddings": True})])
def test_parameter_counts_of_the_other_dense_layouts(model_type, extra):
    config = {"model_type": model_type, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, **extra}
    p = mem.parameter_counts(mem.Arch.from_config(config))
    assert (p.total, p.root, p.block) == _meta_counts(config)


def test_lora_parameters_equal_peft_on_a_small_qwen3():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.for_model(**config)),
                               LoraConfig(r=8, target_modules=list(targets)))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert mem.lora_parameters(mem.Arch.from_config(config), 8, targets) == trainable


def _arch8b():
    a = mem.Arch.from_config(model_config("Qwen/Qwen3-8B-Base").config)
    return a, mem.parameter_counts(a)


def _settings(**changes) -> mem.LearnerSettings:
    """The committed qwen3-8b recipe's training settings on 8 ranks."""
    base = mem.LearnerSettings(dtype="float32", param_dtype="bfloat16", fsdp=True, lora_r=0, lora_params=0,
                               reference=True, gradient_checkpointing=True, micro_batch=4, row_tokens=512 + 4096,
                               engine_vllm=True, vllm=mem.VllmSettings(0.65, "bfloat16", sleep_level=1),
                               hf_batch=2048, rows_per_rank=2048)
    return dataclasses.replace(base, **changes)


def test_the_recipes_training_terms_by_hand():
    a, p = _arch8b()
    gpu = mem.GpuSpec(8, 80.0)
    train, sample, sync = mem.train_phases(a, p, _settings(), gpu)
    terms = {t.label.split(" (")[0]: t.gb for t in train.terms}
    n, tokens = 8_190_735_360, 4 * 4608
    assert p.total == n and p.root == 151936 * 4096 * 2 + 4096
    assert terms["weights + AdamW m, v"] == pytest.approx(12 * n / 8 / 1e9)
    assert terms["reference model"] == terms["gradients"] == pytest.approx(4 * n / 8 / 1e9)
    assert terms["gathered root unit: embeddings + head"] == pytest.approx(6 * p.root / 1e9)
    assert terms["checkpointed block inputs"] == pytest.approx(36 * 4096 * 2 * tokens / 1e9)
    assert terms["logits + their gradient"] == pytest.approx(2 * 2 * 151936 * tokens / 1e9)
    assert train.total == pytest.approx(sum(terms.values()))
    assert [t.gb for t in sample.terms] == pytest.approx([12 * n / 8e9, 4 * n / 8e9, 0.65 * 80, 1.0])
    assert max(ph.total for ph in (train, sample, sync)) < 80
    mem.check_fits([train, sample, sync], gpu, stage="train")  # fits: no refusal


def test_fp32_ddp_at_8b_is_refused_naming_the_biggest_term_and_the_fix():
    a, p = _arch8b()
    gpu = mem.GpuSpec(8, 80.0)
    phases = mem.train_phases(a, p, _settings(fsdp=False, param_dtype=None), gpu)
    with pytest.raises(UserError) as exc:
        mem.check_fits(phases, gpu, stage="train")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("train: needs ") and "while the learner trains" in msg
    assert "biggest term: weights + AdamW m, v (12 B/param, replicated under DDP) 98.3 GB" in msg
    assert msg.endswith("set distributed.strategy: fsdp under torchrun to shard it, or lora.r: 64")


def test_a_vllm_share_without_room_for_one_sequence_is_refused():
    """The recipe as it was: fp32 vLLM weights (32.8 GB) inside 0.3 × 80 GB."""
    a, p = _arch8b()
    v = mem.VllmSettings(0.3, "float32")
    plan = mem.vllm_plan(a, p, v, mem.GpuSpec(8, 80.0), row_tokens=4608)
    assert plan.kv_bytes_per_token == 2 * 36 * 8 * 128 * 4 and plan.min_tokens == 32768
    assert plan.weights_gb == pytest.approx(4 * p.total / 1e9)
    with pytest.raises(UserError, match=r"^train: vLLM's share \(gpu_memory_utilization 0.3\) leaves 0.0 GB of KV "
                                        r"cache after 32.8 GB of weights, less than one 32768-token sequence"):
        mem.check_vllm(plan, v, stage="train")
    ok = mem.vllm_plan(a, p, mem.VllmSettings(0.65, "bfloat16"), mem.GpuSpec(8, 80.0), row_tokens=4608)
    assert ok.kv_gb == pytest.approx(0.65 * 80 - 2 * p.total / 1e9 - mem.VLLM_OVERHEAD_GB)
    mem.check_vllm(ok, v, stage="train")


def test_an_awake_vllm_during_training_is_named_with_sleep_mode_as_the_fix():
    a, p = _arch8b()
    gpu = mem.GpuSpec(8, 80.0)
    s = _settings(vllm=mem.VllmSettings(0.9, "bfloat16", sleep_level=0))
    with pytest.raises(UserError, match=r"biggest term: vLLM awake .* 72.0 GB; set vllm_sleep_level: 1"):
        mem.check_fits(mem.train_phases(a, p, s, gpu), gpu, stage="train")


def test_model_types_outside_the_dense_layouts_get_no_estimate():
    assert mem.Arch.from_config({"model_type": "qwen3_moe", "hidden_size": 8}) is None
    with pytest.raises(UserError, match="lacks intermediate_size"):
        mem.Arch.from_config({"model_type": "qwen3", "hidden_size": 8, "num_attention_heads": 2})
