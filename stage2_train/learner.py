"""The learner: loading it (full fine-tuning or LoRA) with its KL reference, and its
whole weights for a rollout engine (`merged_state_dict`: LoRA merged in, FSDP shards
gathered). Loading goes through pipeline.models (HF loading shared by every stage); what
the step holds of the learner is `stage2_train.context.Learner`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from stage2_train.config import TrainConfig


def load_learner(cfg: TrainConfig) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, PreTrainedModel | None]:
    """(tokenizer, trainable learner, frozen reference or None). With LoRA the reference is
    the base model under `disable_adapter()`, so no second copy is loaded."""
    from pipeline.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(cfg.learner, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    model = load_causal_lm(cfg.learner, revision=cfg.revision, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    ref = None
    if cfg.lora.r > 0:
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [m for m in cfg.lora.target_modules if m not in names]
        if missing:
            raise UserError(f"lora.target_modules: {missing} are not modules of {cfg.learner}; pick from "
                            f"{sorted(n for n in names if n.endswith('proj'))}")
        model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                                 target_modules=list(cfg.lora.target_modules)))
    elif cfg.loss.kl_coef > 0:
        ref = load_causal_lm(cfg.learner, revision=cfg.revision, dtype=cfg.dtype,
                             trust_remote_code=cfg.trust_remote_code).eval().requires_grad_(False)
    return tokenizer, model, ref


def merged_state_dict(model: torch.nn.Module, *, dtype: str | None = None) -> dict[str, torch.Tensor]:
    """The learner's whole weights under the base model's parameter names (LoRA merged in,
    FSDP shards gathered: every rank must call it), optionally cast to `dtype`.

    LoRA is merged out of place: an adapted weight comes back as a new tensor W + ΔW (the
    value peft's `merge_adapter` would write), every other weight as the model's own
    tensor. The base weights, which are also the KL reference, are never written (an
    in-place merge and unmerge in bf16 does not give W back), and no copy of the whole
    model is made."""
    import torch

    from stage2_train.distributed import full_tensor

    cast = (lambda t: t) if dtype is None else (lambda t: t.to(getattr(torch, dtype)))
    if not hasattr(model, "peft_config"):
        return {k: cast(full_tensor(v.detach())) for k, v in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    with torch.no_grad():
        merged = {f"{name}.base_layer.weight": _merged_weight(module) for name, module in base.named_modules()
                  if isinstance(module, LoraLayer)}
        return {k.replace(".base_layer", ""): cast(merged[k] if k in merged else v.detach())
                for k, v in base.state_dict().items() if "lora_" not in k}


def _merged_weight(layer) -> torch.Tensor:
    """W + Σ ΔW of a peft LoRA layer's active adapters, in a new tensor (W untouched)."""
    weight = layer.get_base_layer().weight.detach()
    if layer.merged or layer.disable_adapters:  # already in W, or switched off
        return weight
    out = None
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A:
            if adapter in getattr(layer, "lora_variant", {}) or layer.lora_bias.get(adapter, False):
                raise RuntimeError(f"LoRA adapter {adapter!r}: only plain LoRA (no DoRA, no lora_bias) is synced")
            out = weight.clone() if out is None else out
            out += layer.get_delta_weight(adapter)  # in place, as peft merges: one rounding (the delta may be fp32)
    return weight if out is None else out
