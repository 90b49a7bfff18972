"""`TrainConfig`: the `train` section of params.yaml.

Defaults are the paper's algorithm (METHOD §2) at testbed scale. Paper scale for
reference: lr 1e-6, G = 16, 1024 prompts per step, T = 16, T_mix = 8, max response
4096 tokens, learner Qwen/Qwen3-8B-Base with a bank of Qwen/Qwen3-1.7B-Base rollouts.
The testbed defaults (lr 1e-4, G = 8, 16 prompts per step, 80 steps, T_mix = T/2) are
those of the issue's prototype, so its observations can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.config_blocks import EngineSettings, PresetSampling, PromptSource, Sampling, Scoring
from pipeline.engines.base import SamplingParams
from pipeline.memory import PlannedGpus
from pipeline.rewards import TruncatedReward
from stage2_train.distributed import Strategy
from stage2_train.groups import BankPrompts, BankRows, Mixing
from stage2_train.rl_math import Aggregation, BankCorrection, Baseline
from stage2_train.schedule import Schedule, anneal_rate


@dataclass(frozen=True)
class AnnealConfig:
    """α per step (stage2_train.schedule). `constant` with initial_rate 0 is plain GRPO."""

    schedule: Schedule = Schedule.LINEAR
    t_mix: int = 40  # T_mix in steps (paper: T/2)
    initial_rate: float = 1.0
    floor: float = 0.05  # exponential schedule only


@dataclass(frozen=True)
class LossConfig:
    """The policy objective (stage2_train.rl_math documents each option's source)."""

    baseline: Baseline = Baseline.GROUP
    normalize_std: bool = True  # false = Dr.GRPO
    aggregation: Aggregation = Aggregation.TOKEN_MEAN
    clip_low: float = 0.2
    clip_high: float = 0.2  # > clip_low = DAPO clip-higher
    dual_clip: Optional[float] = 3.0
    kl_coef: float = 0.001  # 0 skips loading the reference model
    bank_correction: BankCorrection = BankCorrection.NONE
    is_cap: float = 1.0  # C of min(π_old/π_explorer, C)
    luffy_gamma: float = 0.1  # γ of f(π) = π/(π+γ)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft; r = 0 trains every weight (full fine-tuning)."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class EvalSettings(PresetSampling):
    """Periodic held-out evaluation (pass@1 and pass@k, by subset when problems carry
    `meta.flawed`). every = 0 disables it; it always runs at step 0 and at the end.

    Sampling is the `preset`'s with single-value overrides, resolved as `s2lpo evaluate`
    resolves its own (pipeline.config_blocks.PresetSampling); the default `plain` is the
    learner's raw distribution (temperature 1.0, no filters, no presence penalty)."""

    every: int = 10
    problems: Optional[str] = "data/testbed/test.jsonl"
    limit: Optional[int] = None
    samples: int = 16
    max_new_tokens: int = 48

    def sampling(self, *, seed: int) -> SamplingParams:
        """`samples` responses per problem under the resolved preset."""
        return self.sampling_params(n=self.samples, max_new_tokens=self.max_new_tokens, seed=seed)


@dataclass(frozen=True)
class DistributedSettings:
    """How `s2lpo train` runs under torchrun (stage2_train.distributed); ignored in one process.

    ddp replicates the learner on every rank (fits one GPU, or LoRA); fsdp shards its weights,
    gradients and Adam states (FSDP2). `param_dtype` (fsdp only) computes in e.g. bfloat16
    over the `dtype` master weights, with gradients reduced in float32."""

    strategy: Strategy = Strategy.DDP
    param_dtype: Optional[str] = None
    reshard_after_forward: bool = True  # fsdp: free the gathered weights after each forward
    timeout_minutes: int = 60  # collectives; rank 0 writes checkpoints while the others wait


@dataclass(frozen=True)
class TrainConfig(Scoring, EngineSettings, Sampling, PromptSource):
    """One GRPO / S2L-PO run: learner, bank, schedule, objective and run management.

    The prompt source, online sampling, engine and scoring fields are the shared blocks'
    (pipeline.config_blocks); `temperature`, `top_p`, `top_k` are the online rollouts'
    (paper: 1.0; the token-level-noise baseline: e.g. 1.2). The fields re-declared first
    below differ from the blocks' defaults."""

    dtype: str = "float32"  # the learner's master weights: a small AdamW step is below bf16's resolution
    gpu_memory_utilization: float = 0.3  # vLLM's share of each GPU (weights + KV cache), colocated with training
    scoring_workers: int = 0  # 0 = score in this process (trusted, short outputs: the testbed)
    prompts: str = "data/testbed/train.jsonl"  # the bank's prompts (or a subset of them)
    learner: str = "data/testbed/learner"  # local directory or hub id (e.g. Qwen/Qwen3-8B-Base)
    template: Optional[str] = None  # None = the bank's (bank.json template.text; "{question}=" with bank: null); another is refused
    bank: Optional[str] = "data/bank"  # None = plain GRPO without a bank
    out_dir: str = "data/train"
    steps: int = 80
    prompts_per_step: int = 16
    group_size: int = 8  # G
    mixing: Mixing = Mixing.MIXED
    bank_rows: BankRows = BankRows.ALL
    bank_prompts: BankPrompts = BankPrompts.ALL
    bank_pass_band: Optional[tuple[float, float]] = None  # [low, high]: train only on prompts whose cached explorer pass rate is in it (stage2_train.difficulty)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    truncated_reward: TruncatedReward = TruncatedReward.ZERO  # online and bank rows alike (pipeline.rewards)
    lr: float = 1.0e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    ppo_epochs: int = 1
    mini_batch_size: int = 64  # responses per optimizer step
    micro_batch_size: int = 64  # responses per forward/backward (gradient accumulation)
    gradient_checkpointing: bool = False  # recompute each block's activations in backward (long responses)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    vllm_sleep_level: int = 0  # 0 = vLLM stays resident; 1/2 = sleep while training (1 keeps weights in CPU RAM)
    rollout_dtype: Optional[str] = None  # the vLLM engine's dtype (None = dtype), e.g. bfloat16 over fp32 masters
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    gpus: PlannedGpus = field(default_factory=PlannedGpus)  # what --dry-run plans for; a run checks those it sees
    checkpoint_every: int = 20  # 0 = only at the end
    keep_checkpoints: int = 2
    tensorboard: bool = True
    wandb_project: Optional[str] = None
    threads: Optional[int] = None  # torch CPU threads (None = torch's default)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 2:
            raise ValueError("group_size must be ≥ 2 (a group of one has no advantage)")
        if self.steps < 1 or self.prompts_per_step < 1:
            raise ValueError("steps and prompts_per_step must be ≥ 1")
        if self.mini_batch_size < 1 or self.micro_batch_size < 1 or self.ppo_epochs < 1:
            raise ValueError("mini_batch_size, micro_batch_size and ppo_epochs must be ≥ 1")
        if self.loss.clip_low < 0 or self.loss.clip_high < 0:
            raise ValueError("clip_low and clip_high must be ≥ 0")
        if self.bank_pass_band is not None:
            band = self.bank_pass_band
            if len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0:
                raise ValueError(f"bank_pass_band {list(band)}: need [low, high] with 0 ≤ low ≤ high ≤ 1, e.g. [0.05, 0.5]")
            if self.bank is None:
                raise ValueError("bank_pass_band reads the explorer's pass rates from the bank; set bank (or drop the band)")
        if self.vllm_sleep_level not in (0, 1, 2):
            raise ValueError("vllm_sleep_level must be 0 (no sleep), 1 or 2")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be ≥ 0 (0 = a checkpoint at the end only)")
        if self.distributed.param_dtype is not None and self.distributed.strategy is not Strategy.FSDP:
            raise ValueError("distributed.param_dtype is FSDP's mixed precision; set distributed.strategy: fsdp")

    @property
    def uses_bank(self) -> bool:
        """Whether any step draws from the bank (α > 0 at some step up to T_mix)."""
        return self.bank is not None and any(
            alpha_at(self, i) > 0 for i in range(1, min(self.steps, max(self.anneal.t_mix, 1)) + 1))


def alpha_at(cfg: TrainConfig, step: int) -> float:
    """α at 1-based `step`: the anneal schedule's rate (stage2_train.schedule), 0 without a bank."""
    if cfg.bank is None:
        return 0.0
    a = cfg.anneal
    return anneal_rate(step, schedule=a.schedule, t_mix=a.t_mix, initial_rate=a.initial_rate, floor=a.floor)
