"""The engines that sample the learner's online responses during training, behind one protocol.

`RolloutEngine` is what the step asks of an engine: `generate` the step's completions,
`sync_weights` (take the learner's new weights after an update) and `release` (sampling is
over until the next sync). Each engine implements all three; one that needs no sync or
release implements a no-op, so the trainer never asks an engine what it can do:
- `TrainingHFEngine`: HF generate on the training model itself (nothing to sync);
- `SyncedHFEngine`: HF generate on a whole copy of the learner, synced every step (under
  FSDP, whose forwards are collectives);
- `ColocatedVLLM`: vLLM on this rank's GPU, synced every step, asleep while the learner
  trains when `vllm_sleep_level` > 0.
The engines themselves (pipeline.engines) know only token ids and are shared with
exploration and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pipeline.engines import Completion, SamplingParams
from stage2_train.learner import merged_state_dict

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.engines.vllm import VLLMEngine
    from stage2_train.config import TrainConfig
    from stage2_train.distributed import Dist


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions for each tokenised prompt, in prompt order."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Sample from `model`'s current weights from now on (every rank calls it under FSDP)."""
        ...

    def release(self) -> None:
        """Sampling is over until the next `sync_weights`: free what the learner can use."""
        ...


def build_engine(cfg: TrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 d: Dist) -> RolloutEngine:
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
        engine = SyncedHFEngine(copy.to(d.device).eval().requires_grad_(False), tokenizer, batch_size=cfg.generate_batch_size,
                                stop_token_ids=stops, sync_dtype=cfg.rollout_dtype)
        engine.load_weights(merged_state_dict(model))
        return engine
    return TrainingHFEngine(model, tokenizer, batch_size=cfg.generate_batch_size, stop_token_ids=stops)


def learner_stop_ids(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The learner's stop set (pipeline.engines.stops) with train.stop_token_ids added."""
    from pipeline.engines.stops import model_stop_ids

    return model_stop_ids(cfg.learner, tokenizer, cfg.stop_token_ids, revision=cfg.revision,
                          trust_remote_code=cfg.trust_remote_code)


def _colocated_vllm(cfg: TrainConfig, model: PreTrainedModel, d: Dist, stops: tuple[int, ...]) -> ColocatedVLLM:
    from pipeline.engines.vllm import VLLMEngine

    # under torchrun every rank holds one vLLM worker (vLLM's external launcher): the ranks of a
    # tensor-parallel group sample the same prompts together; alone, vLLM runs its own TP workers
    engine = VLLMEngine(cfg.learner, revision=cfg.revision, dtype=cfg.rollout_dtype or cfg.dtype, seed=cfg.seed,
                        gpu_memory_utilization=cfg.gpu_memory_utilization,
                        tensor_parallel_size=cfg.tensor_parallel_size, trust_remote_code=cfg.trust_remote_code,
                        in_process=True, enable_sleep_mode=cfg.vllm_sleep_level > 0,
                        distributed_executor_backend="external_launcher" if d.active else None,
                        stop_token_ids=stops)
    colocated = ColocatedVLLM(engine, sleep_level=cfg.vllm_sleep_level, sync_dtype=cfg.rollout_dtype)
    colocated.sync_weights(model)  # LoRA starts as identity: harmless
    return colocated


class TrainingHFEngine:
    """HFEngine over the learner being trained: eval mode while sampling, then back. It
    samples the weights being trained, so it has nothing to sync or release."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int,
                 stop_token_ids: Sequence[int] | None = None) -> None:
        from pipeline.engines.hf import HFEngine

        self.model = model
        self.inner = HFEngine(model, tokenizer, batch_size=batch_size, stop_token_ids=stop_token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.inner.generate(prompts, params)
        finally:
            self.model.train(was_training)

    def sync_weights(self, model: torch.nn.Module) -> None:
        pass

    def release(self) -> None:
        pass


class SyncedHFEngine:
    """HFEngine over a whole copy of the learner that `sync_weights` keeps current (the
    learner's weights cast to `sync_dtype`, None = as they are)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int,
                 stop_token_ids: Sequence[int] | None = None, sync_dtype: str | None = None) -> None:
        from pipeline.engines.hf import HFEngine

        self.model, self.sync_dtype = model, sync_dtype
        self.inner = HFEngine(model, tokenizer, batch_size=batch_size, stop_token_ids=stop_token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        return self.inner.generate(prompts, params)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.load_weights(merged_state_dict(model, dtype=self.sync_dtype))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)

    def release(self) -> None:
        pass


class ColocatedVLLM:
    """vLLM beside the learner on one GPU. With sleep level 1 or 2 it sleeps while the
    learner trains (`release`): its KV cache is freed, and its weights are offloaded to
    CPU RAM (1) or dropped (2); `load_weights` wakes the weights and overwrites them,
    the next `generate` wakes the KV cache."""

    def __init__(self, engine: VLLMEngine, *, sleep_level: int, sync_dtype: str | None = None) -> None:
        self.engine, self.sleep_level, self.sync_dtype, self.asleep = engine, sleep_level, sync_dtype, set()

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        if "weights" in self.asleep and self.sleep_level == 2:
            raise RuntimeError("vLLM dropped its weights at sleep level 2; load_weights must come before generate")
        self._wake(sorted(self.asleep))
        return self.engine.generate(prompts, params)

    def release(self) -> None:
        if self.sleep_level and not self.asleep:
            self.engine.sleep(self.sleep_level)
            self.asleep = {"weights", "kv_cache"}

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.load_weights(merged_state_dict(model, dtype=self.sync_dtype))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
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
