"""Loading the learner (full fine-tuning or LoRA), its reference, its engine, the scorer,
and the bank — with the checks that make a bank/learner mismatch a one-line refusal."""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.rewards import BANK_DEFAULT, TruncatedReward


def load_learner(cfg):
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


def build_engine(cfg, model, tokenizer, d):
    """The rollout engine: HF generate on the training model itself; under FSDP (whose
    forwards are collectives) HF generate on a whole copy synced every step; or vLLM,
    colocated on this rank's GPU and synced every step."""
    from pipeline.engines import EngineKind, resolve_engine_kind

    stops = learner_stop_ids(cfg, tokenizer)
    if resolve_engine_kind(cfg.engine) is EngineKind.VLLM:
        return _colocated_vllm(cfg, model, d, stops)
    if d.fsdp:
        from pipeline.models import load_causal_lm

        copy = load_causal_lm(cfg.learner, revision=cfg.revision, dtype=cfg.dtype,
                              trust_remote_code=cfg.trust_remote_code)
        engine = _SyncedHFEngine(copy.to(d.device).eval().requires_grad_(False), tokenizer,
                                 batch_size=cfg.generate_batch_size, stop_token_ids=stops)
        engine.load_weights(merged_state_dict(model))
        return engine
    return _TrainingHFEngine(model, tokenizer, batch_size=cfg.generate_batch_size, stop_token_ids=stops)


def learner_stop_ids(cfg, tokenizer) -> tuple[int, ...]:
    """The learner's stop set (pipeline.engines.stops) with train.stop_token_ids added."""
    from pipeline.engines.stops import model_stop_ids

    return model_stop_ids(cfg.learner, tokenizer, cfg.stop_token_ids, revision=cfg.revision,
                          trust_remote_code=cfg.trust_remote_code)


def _colocated_vllm(cfg, model, d, stops):
    from pipeline.engines.vllm import VLLMEngine

    # under torchrun every rank holds one vLLM worker (vLLM's external launcher): the ranks of a
    # tensor-parallel group sample the same prompts together; alone, vLLM runs its own TP workers
    engine = VLLMEngine(cfg.learner, revision=cfg.revision, dtype=cfg.rollout_dtype or cfg.dtype, seed=cfg.seed,
                        gpu_memory_utilization=cfg.gpu_memory_utilization,
                        tensor_parallel_size=cfg.tensor_parallel_size, trust_remote_code=cfg.trust_remote_code,
                        in_process=True, enable_sleep_mode=cfg.vllm_sleep_level > 0,
                        distributed_executor_backend="external_launcher" if d.active else None,
                        stop_token_ids=stops)
    colocated = _ColocatedVLLM(engine, sleep_level=cfg.vllm_sleep_level)
    colocated.load_weights(merged_state_dict(model, dtype=cfg.rollout_dtype))  # LoRA starts as identity: harmless
    return colocated


class _TrainingHFEngine:
    """HFEngine over the learner being trained: eval mode while sampling, then back."""

    def __init__(self, model, tokenizer, *, batch_size: int, stop_token_ids=None) -> None:
        from pipeline.engines.hf import HFEngine

        self.model = model
        self.inner = HFEngine(model, tokenizer, batch_size=batch_size, stop_token_ids=stop_token_ids)

    def generate(self, prompts, params):
        was_training = self.model.training
        self.model.eval()
        try:
            return self.inner.generate(prompts, params)
        finally:
            self.model.train(was_training)


class _SyncedHFEngine:
    """HFEngine over a whole copy of the learner that `load_weights` keeps current."""

    def __init__(self, model, tokenizer, *, batch_size: int, stop_token_ids=None) -> None:
        from pipeline.engines.hf import HFEngine

        self.model = model
        self.inner = HFEngine(model, tokenizer, batch_size=batch_size, stop_token_ids=stop_token_ids)

    def generate(self, prompts, params):
        return self.inner.generate(prompts, params)

    def load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights)


class _ColocatedVLLM:
    """vLLM beside the learner on one GPU. With sleep level 1 or 2 it sleeps while the
    learner trains (`release`): its KV cache is freed, and its weights are offloaded to
    CPU RAM (1) or dropped (2); `load_weights` wakes the weights and overwrites them,
    the next `generate` wakes the KV cache."""

    def __init__(self, engine, *, sleep_level: int) -> None:
        self.engine, self.sleep_level, self.asleep = engine, sleep_level, set()

    def generate(self, prompts, params):
        if "weights" in self.asleep and self.sleep_level == 2:
            raise RuntimeError("vLLM dropped its weights at sleep level 2; load_weights must come before generate")
        self._wake(sorted(self.asleep))
        return self.engine.generate(prompts, params)

    def release(self) -> None:
        if self.sleep_level and not self.asleep:
            self.engine.sleep(self.sleep_level)
            self.asleep = {"weights", "kv_cache"}

    def load_weights(self, weights: dict) -> None:
        self._wake(["weights"] if "weights" in self.asleep else [])
        self.engine.load_weights(weights)

    def _wake(self, tags: list[str]) -> None:
        if not tags:
            return
        import torch

        if torch.cuda.is_available():  # blocks the learner freed stay in torch's cache, out of vLLM's reach
            torch.cuda.empty_cache()
        self.engine.wake_up(tags)
        self.asleep.difference_update(tags)


def merged_state_dict(model, *, dtype: str | None = None) -> dict:
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


def _merged_weight(layer):
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


def make_scorer(cfg):
    from pipeline.scoring_pool import ScoringPool

    return ScoringPool(cfg.scoring_workers, timeout_s=cfg.score_timeout_s).score


# what stage 2 reads of a bank row (stage2_train.rollout.bank_responses); the prompt comes from the learner's
# tokenizer, and the row's stored prompt ids must equal it
BANK_COLUMNS = ("prompt_token_ids", "response", "response_token_ids", "logprobs", "reward", "correct", "finish_reason")


def open_bank_for(cfg, tokenizer, problems, scorer, *, echo=print):
    """(reader, rescorer or None) after checking the bank was made for this learner and prompts."""
    from pipeline.bank.reader import BankReader
    from pipeline.models import tokenizer_fingerprint
    from pipeline.prompts import template_fingerprint
    from pipeline.verifier import VERIFIER_VERSION

    reader = BankReader.open(cfg.bank, columns=BANK_COLUMNS)
    identity = reader.files.identity
    mine = tokenizer_fingerprint(tokenizer)
    if identity.get("tokenizer") != mine:
        raise UserError(f"{cfg.bank}: filled by an explorer whose tokenizer ({identity.get('tokenizer')}) differs from "
                        f"the learner's ({mine}); use a learner of the explorer's family or a bank made for it")
    tmpl = template_fingerprint(tokenizer, cfg.template)
    if identity.get("template", {}).get("fingerprint") != tmpl:
        raise UserError(f"{cfg.bank}: prompts rendered with template {identity.get('template', {}).get('text')!r}, "
                        f"but train.template is {cfg.template!r}; set train.template to the bank's")
    covered = sum(p.id in reader.pool for p in problems)
    if covered == 0:
        raise UserError(f"{cfg.bank}: holds none of the {len(problems)} training prompts of {cfg.prompts}; "
                        "run `s2lpo explore` on these prompts first")
    if covered < len(problems):
        echo(f"warning: {len(problems) - covered} of {len(problems)} training prompts have no bank rows; "
             "their groups are generated online")
    _check_bank_sampling(cfg, identity, learner_stop_ids(cfg, tokenizer), echo=echo)
    rescorer = None
    if identity.get("verifier", {}).get("version") != VERIFIER_VERSION:
        echo(f"bank rewards came from {identity.get('verifier', {}).get('version')}; re-scoring drawn rows with "
             f"{VERIFIER_VERSION}")
        rescorer = scorer
    elif cfg.truncated_reward is TruncatedReward.VERIFY and bank_truncated_reward(identity) is TruncatedReward.ZERO:
        echo("bank rewards of truncated rows are zero (truncated_reward: zero) and train.truncated_reward is verify; "
             "re-scoring drawn rows")
        rescorer = scorer
    return reader, rescorer


def bank_truncated_reward(identity: dict) -> TruncatedReward:
    """How the bank rewarded truncated rows (banks from before the key: verify)."""
    return TruncatedReward(identity.get("truncated_reward", BANK_DEFAULT.value))


def _check_bank_sampling(cfg, identity: dict, stops: tuple[int, ...], *, echo) -> None:
    """Truncated IS needs log-probs of the explorer's sampling distribution (banks from before
    bank.json recorded `logprobs: sampling` hold raw ones); a bank cut at another stop set is
    reported, since its responses may end on a token the learner does not stop on, or hold
    one it would have stopped on."""
    from stage2_train.rl_math import BankCorrection

    if cfg.loss.bank_correction is BankCorrection.TRUNCATED_IS and identity.get("logprobs") != "sampling":
        raise UserError(f"{cfg.bank}: its log-probs are the explorer's raw distribution, not the one its tokens were "
                        "sampled from, which truncated IS divides by; rebuild the bank with this s2lpo version "
                        "or set loss.bank_correction to none or luffy")
    bank_stops = identity.get("sampling", {}).get("stop_token_ids")
    if bank_stops is None:
        echo(f"warning: {cfg.bank} does not record its stop tokens (made before s2lpo recorded them); "
             f"the learner stops on {list(stops)}")
    elif tuple(bank_stops) != tuple(stops):
        echo(f"warning: the bank's responses were cut at stop tokens {bank_stops}, the learner's are {list(stops)}; "
             "set train.stop_token_ids (or explore's) so they agree")
