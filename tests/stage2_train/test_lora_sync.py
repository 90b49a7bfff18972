"""Pushing a LoRA learner's weights to the rollout engine leaves its base (the KL
reference) untouched, bit for bit, and copies only the adapted weights."""

from __future__ import annotations

import copy

import torch

from stage2_train.learner import merged_state_dict


def _bf16_lora(char_tokenizer):
    from peft import LoraConfig, get_peft_model

    from pipeline.testbed.model import ModelShape, build_model

    base = build_model(ModelShape(layers=2, hidden=64), char_tokenizer, seed=5).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; a trained adapter does not
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_syncs_leave_the_bf16_base_bit_identical(char_tokenizer):
    model = _bf16_lora(char_tokenizer)
    base = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    for _ in range(8):
        weights = merged_state_dict(model)
    now = model.get_base_model().state_dict()
    changed = [k for k in base if not torch.equal(base[k], now[k])]
    assert changed == []
    merged = copy.deepcopy(model)
    merged.merge_adapter()  # peft's own merge: the values the engine must get
    want = {k.replace(".base_layer", ""): v for k, v in merged.get_base_model().state_dict().items() if "lora_" not in k}
    assert weights.keys() == want.keys()
    assert all(torch.equal(weights[k], want[k]) for k in want)
    adapted = [k for k in want if "_proj.weight" in k and "self_attn" in k]
    assert len(adapted) == 8 and all(not torch.equal(weights[k], base[k.replace(".weight", ".base_layer.weight")])
                                     for k in adapted)


def test_only_the_adapted_weights_are_new_tensors(char_tokenizer):
    model = _bf16_lora(char_tokenizer)
    own = {k.replace(".base_layer", ""): v.data_ptr() for k, v in model.get_base_model().state_dict().items()}
    weights = merged_state_dict(model)
    copied = sorted(k for k, v in weights.items() if v.data_ptr() != own[k])
    assert copied == sorted(k for k in weights if "self_attn" in k and k.endswith("_proj.weight"))
    bf16 = merged_state_dict(model, dtype="float32")
    assert all(v.dtype == torch.float32 for v in bf16.values())


def test_every_training_engine_keeps_the_protocol_and_the_synced_copy_follows_the_learner(char_tokenizer):
    """The step asks every engine for generate, sync_weights and release (no probing); the
    whole copy FSDP samples from takes the LoRA learner's merged weights on sync."""
    from pipeline.testbed.model import ModelShape, build_model
    from stage2_train.rollout_engines import ColocatedVLLM, RolloutEngine, SyncedHFEngine, TrainingHFEngine

    protocol = {"generate", "sync_weights", "release"}
    assert protocol <= {n for n in vars(RolloutEngine) if not n.startswith("_")}
    for engine in (TrainingHFEngine, SyncedHFEngine, ColocatedVLLM):
        assert all(callable(getattr(engine, name, None)) for name in protocol), engine
    model = _bf16_lora(char_tokenizer)
    copy_ = build_model(ModelShape(layers=2, hidden=64), char_tokenizer, seed=9).to(torch.bfloat16)
    engine = SyncedHFEngine(copy_, char_tokenizer, batch_size=4)
    engine.sync_weights(model)
    engine.release()
    want = merged_state_dict(model)
    assert all(torch.equal(copy_.state_dict()[k], v) for k, v in want.items())
