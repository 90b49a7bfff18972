"""GPU memory per GPU of a stage, from the model's config.json and the stage's settings.

Pure arithmetic: no torch, no weights. The parameter count is exact for dense decoders of
the Qwen2/Qwen3/Llama/Mistral layout (tests check it against the model built on the meta
device); memory is bytes per parameter and per token, term by term, for each phase of a
stage, so a startup check can refuse a configuration that cannot fit (`check_fits`, one
line naming the biggest term and its fix) and a dry run can print the plan.

Training (stage 2) has three phases, each with its own peak:
- *train*: the learner's forward/backward (vLLM asleep when `vllm_sleep_level` > 0);
- *sample*: vLLM awake at `gpu_memory_utilization` beside the resident learner state
  (weights and AdamW moments; gradients are freed after every optimizer step);
- *sync*: the gathered copy of the weights in `rollout_dtype` going into vLLM's weights.
Explore and evaluate have one, *sample*. Assumed values (not derived from the config) are
module constants, marked "assumed" in every printed label: a prompt of `PROMPT_TOKENS`,
vLLM's activations and CUDA graphs, the CUDA context and NCCL buffers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from pipeline.errors import UserError

GB = 1e9
PROMPT_TOKENS = 512  # assumed longest rendered prompt (DAPO-Math with Qwen3's chat template: ~100–400)
VLLM_OVERHEAD_GB = 2.0  # assumed: vLLM's activations at its batch-token budget, CUDA graphs, sampler
VLLM_ASLEEP_GB = 1.0  # assumed: what a sleeping vLLM keeps (CUDA graph pools, small buffers)
CONTEXT_GB = 1.0  # assumed: CUDA context, NCCL buffers, allocator slack
LOSS_CHUNKS_GB = 3 * 2**28 / GB  # stage2_train.policy: float32 work in ≤ 256 MiB chunks, ~3 alive
DENSE = ("qwen3", "qwen2", "llama", "mistral")
BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float64": 8}


class Phase(enum.Enum):
    TRAIN = "while the learner trains"
    SAMPLE = "while vLLM samples"
    SYNC = "while the weights sync into vLLM"
    GENERATE = "while HF generate samples"


@dataclass(frozen=True)
class Arch:
    """The numbers of config.json that set a dense decoder's size."""

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int
    dtype: str  # config's torch_dtype ("auto" resolves to it)

    @classmethod
    def from_config(cls, config: dict, *, where: str = "config.json") -> Optional["Arch"]:
        """The architecture, or None for a model type this arithmetic does not cover."""
        if config.get("model_type") not in DENSE:
            return None
        try:
            h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(config["model_type"], h, int(config["intermediate_size"]), int(config["num_hidden_layers"]),
                       heads, int(config.get("num_key_value_heads") or heads),
                       int(config.get("head_dim") or h // heads), int(config["vocab_size"]),
                       bool(config.get("tie_word_embeddings", False)), int(config.get("max_position_embeddings", 0)),
                       str(config.get("torch_dtype") or config.get("dtype") or "float32"))
        except KeyError as exc:
            raise UserError(f"{where}: lacks {exc.args[0]}; re-download the model's config.json") from None


@dataclass(frozen=True)
class Params:
    total: int
    embed: int
    block: int  # one transformer block
    root: int  # what FSDP's root unit holds: embeddings, final norm, untied head
    largest: int  # the largest single tensor

    @property
    def root_billions(self) -> float:
        return self.root / 1e9


def parameter_counts(a: Arch) -> Params:
    """Exact parameter counts of a Qwen2/Qwen3/Llama/Mistral decoder."""
    q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    attn = a.hidden * q + 2 * a.hidden * kv + q * a.hidden
    if a.model_type == "qwen2":  # q, k, v biases
        attn += q + 2 * kv
    if a.model_type == "qwen3":  # RMSNorm over each head's q and k
        attn += 2 * a.head_dim
    block = attn + 3 * a.hidden * a.intermediate + 2 * a.hidden
    embed = a.vocab * a.hidden
    root = embed + a.hidden + (0 if a.tied else embed)
    return Params(root + a.layers * block, embed, block, root, max(embed, a.hidden * a.intermediate))


def lora_parameters(a: Arch, r: int, targets: tuple[str, ...]) -> int:
    """Trainable LoRA parameters: r·(in + out) per targeted projection per block."""
    q, kv, h, i = a.heads * a.head_dim, a.kv_heads * a.head_dim, a.hidden, a.intermediate
    dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
            "up_proj": (h, i), "down_proj": (i, h)}
    return a.layers * sum(r * sum(dims[t]) for t in targets if t in dims)


def dtype_bytes(dtype: Optional[str], a: Arch) -> int:
    name = a.dtype if dtype in (None, "auto") else dtype
    if name not in BYTES:
        raise UserError(f"dtype {name!r}: not a floating dtype; use float32, bfloat16 or float16")
    return BYTES[name]


def kv_bytes_per_token(a: Arch, kv_dtype_bytes: int, tp: int = 1) -> float:
    """K and V of every layer for one token, on one of `tp` tensor-parallel GPUs."""
    return 2 * a.layers * max(1, a.kv_heads // tp) * a.head_dim * kv_dtype_bytes


def activation_values_per_token(a: Arch) -> int:
    """≈ values one block keeps per token for backward: norm inputs/outputs (4·h), q with its
    norm and rotary copies (4·q), k and v likewise (4·kv), the MLP's gate, up, act and
    product (4·intermediate). Attention runs as a fused kernel (no L² scores)."""
    return 4 * a.hidden + 4 * a.heads * a.head_dim + 4 * a.kv_heads * a.head_dim + 4 * a.intermediate


@dataclass(frozen=True)
class Term:
    label: str
    gb: float
    fix: str  # what lowers it (names a setting of the stage)


@dataclass(frozen=True)
class PhaseEstimate:
    phase: Phase
    terms: tuple[Term, ...]

    @property
    def total(self) -> float:
        return sum(t.gb for t in self.terms)

    @property
    def biggest(self) -> Term:
        return max(self.terms, key=lambda t: t.gb)


@dataclass(frozen=True)
class GpuSpec:
    """The GPUs a stage runs on: `count` of `memory_gb` each, and where the numbers came from."""

    count: int
    memory_gb: float
    source: str = "declared"


@dataclass(frozen=True)
class VllmSettings:
    share: float  # gpu_memory_utilization
    dtype: Optional[str]  # weights and KV cache
    tp: int = 1
    max_model_len: Optional[int] = None  # None: the model's max_position_embeddings
    sleep_level: int = 0


@dataclass(frozen=True)
class VllmPlan:
    weights_gb: float
    overhead_gb: float
    kv_gb: float
    kv_bytes_per_token: float
    min_tokens: int  # vLLM refuses to start unless one sequence of max_model_len fits
    row_tokens: int

    @property
    def sequences(self) -> float:
        return max(0.0, self.kv_gb * GB / self.kv_bytes_per_token / self.row_tokens)


def vllm_plan(a: Arch, p: Params, v: VllmSettings, gpu: GpuSpec, *, row_tokens: int) -> VllmPlan:
    """How vLLM divides its share of one GPU: weights, assumed overhead, the KV cache left."""
    b = dtype_bytes(v.dtype, a)
    weights = b * p.total / v.tp / GB
    kv = v.share * gpu.memory_gb - weights - VLLM_OVERHEAD_GB
    return VllmPlan(weights, VLLM_OVERHEAD_GB, kv, kv_bytes_per_token(a, b, v.tp),
                    v.max_model_len or a.max_positions or row_tokens, row_tokens)


def check_vllm(plan: VllmPlan, v: VllmSettings, *, stage: str, dtype_key: str = "dtype") -> None:
    """vLLM refuses to start when its share cannot hold its weights and one full-length sequence."""
    need = plan.min_tokens * plan.kv_bytes_per_token / GB
    if plan.kv_gb < need:
        raise UserError(
            f"{stage}: vLLM's share (gpu_memory_utilization {v.share}) leaves {max(plan.kv_gb, 0):.1f} GB of KV cache "
            f"after {plan.weights_gb:.1f} GB of weights, less than one {plan.min_tokens}-token sequence "
            f"({need:.1f} GB); raise gpu_memory_utilization, set {dtype_key}: bfloat16 or raise tensor_parallel_size")


def check_fits(phases: list[PhaseEstimate], gpu: GpuSpec, *, stage: str) -> None:
    """Refuse, in one line naming the biggest term and its fix, a phase that exceeds the GPU."""
    for ph in phases:
        if ph.total > gpu.memory_gb:
            big = ph.biggest
            raise UserError(f"{stage}: needs {ph.total:.1f} GB per GPU {ph.phase.value} but the {gpu.count} GPU(s) "
                            f"have {gpu.memory_gb:.0f} GB each; biggest term: {big.label} {big.gb:.1f} GB; {big.fix}")


def sampling_phases(a: Arch, p: Params, *, engine_vllm: bool, v: VllmSettings, gpu: GpuSpec, row_tokens: int,
                    hf_dtype: Optional[str], hf_batch: int) -> list[PhaseEstimate]:
    """Explore and evaluate: vLLM alone at its share, or HF generate's weights and KV cache."""
    if engine_vllm:
        return [PhaseEstimate(Phase.SAMPLE, (Term(f"vLLM (gpu_memory_utilization {v.share} × {gpu.memory_gb:.0f} GB)",
                                                  v.share * gpu.memory_gb, "lower gpu_memory_utilization"),))]
    b = dtype_bytes(hf_dtype, a)
    return [PhaseEstimate(Phase.GENERATE, (
        Term(f"weights ({b} B/param)", b * p.total / GB, "set dtype: bfloat16"),
        *_hf_generate_terms(a, b, hf_batch, row_tokens, p.total),
        Term("CUDA context, NCCL (assumed)", CONTEXT_GB, "use GPUs with more memory")))]


def _hf_generate_terms(a: Arch, b: int, batch: int, row_tokens: int, n: int) -> tuple[Term, ...]:
    kv = batch * row_tokens * kv_bytes_per_token(a, b) / GB
    logits = 2 * batch * a.vocab * 4 / GB  # one step's float32 logits and their processed copy
    return (Term(f"HF generate KV cache ({batch} sequences × {row_tokens} tokens)", kv, "lower generate_batch_size"),
            Term("HF generate logits of one step (float32)", logits, "lower generate_batch_size"))


@dataclass(frozen=True)
class LearnerSettings:
    """What sets stage 2's memory (built from TrainConfig by stage2_train.plan)."""

    dtype: str  # master weights
    param_dtype: Optional[str]  # FSDP compute dtype
    fsdp: bool
    lora_r: int
    lora_params: int  # trainable adapter parameters (0 without LoRA)
    reference: bool  # a separate frozen reference model (kl_coef > 0, full fine-tuning)
    gradient_checkpointing: bool
    micro_batch: int
    row_tokens: int  # prompt + max_new_tokens
    engine_vllm: bool
    vllm: VllmSettings
    hf_batch: int  # HF generate batch per rank
    rows_per_rank: int = 0  # responses of one step that this rank trains on


def train_phases(a: Arch, p: Params, s: LearnerSettings, gpu: GpuSpec) -> list[PhaseEstimate]:
    """Per-GPU GB of stage 2's phases on `gpu.count` ranks."""
    n, b = p.total, dtype_bytes(s.dtype, a)
    shards = gpu.count if s.fsdp else 1
    c = dtype_bytes(s.param_dtype, a) if (s.fsdp and s.param_dtype) else b  # compute dtype
    where = f"sharded over {shards}" if s.fsdp else ("replicated under DDP" if gpu.count > 1 else "one process")
    more = ("launch more ranks (torchrun --nproc-per-node / --nnodes)" if s.fsdp else
            "set distributed.strategy: fsdp under torchrun to shard it, or lora.r: 64")
    resident = _resident_terms(p, s, b, shards, where, more)
    train = list(resident)
    if s.lora_r > 0:
        train.append(Term(f"adapter gradients ({b} B/param)", b * s.lora_params / GB, "lower lora.r"))
    else:
        train.append(Term(f"gradients ({b} B/param, {where})", b * n / shards / GB, more))
        if gpu.count > 1 and not s.fsdp:
            train.append(Term("DDP gradient buckets", b * n / GB, "set distributed.strategy: fsdp"))
    if s.fsdp:
        g = c + 4  # gathered compute-dtype weights and their unsharded float32 gradient
        fix = "set distributed.param_dtype: bfloat16" if c == 4 else "use GPUs with more memory"
        train += [Term(f"gathered root unit: embeddings + head ({p.root_billions:.3f} B params, {g} B/param)",
                       g * p.root / GB, fix),
                  Term(f"gathered 2 blocks ({g} B/param)", 2 * g * p.block / GB, fix)]
    train += _activation_terms(a, s, c)
    # stage2_train.step: the rank's packed step (ids and mask int64, masks and 3 log-prob tensors float32)
    train.append(Term(f"the step's packed rows ({s.rows_per_rank} × {s.row_tokens} tokens × 36 B)",
                      36 * s.rows_per_rank * s.row_tokens / GB, "lower prompts_per_step or max_new_tokens"))
    train += _engine_while_training(s, gpu, b, n)
    train.append(Term("CUDA context, NCCL (assumed)", CONTEXT_GB, "use GPUs with more memory"))
    return [PhaseEstimate(Phase.TRAIN, tuple(train)), *_rollout_phases(a, p, s, gpu, resident, b)]


def _resident_terms(p: Params, s: LearnerSettings, b: int, shards: int, where: str, more: str) -> tuple[Term, ...]:
    """What stays on the GPU for the whole run: weights, AdamW m and v, the reference."""
    n = p.total
    if s.lora_r > 0:
        return (Term(f"frozen base weights ({b} B/param)", b * n / GB, "set dtype: bfloat16"),
                Term(f"adapter weights + AdamW m, v ({3 * b} B/param)", 3 * b * s.lora_params / GB, "lower lora.r"))
    terms = (Term(f"weights + AdamW m, v ({3 * b} B/param, {where})", 3 * b * n / shards / GB, more),)
    if s.reference:
        terms += (Term(f"reference model ({b} B/param, {where})", b * n / shards / GB,
                       "set loss.kl_coef: 0 (no reference model)" + ("" if s.fsdp else
                                                                     " or distributed.strategy: fsdp")),)
    return terms


def _activation_terms(a: Arch, s: LearnerSettings, c: int) -> list[Term]:
    tokens = s.micro_batch * s.row_tokens
    block = activation_values_per_token(a) * c * tokens / GB
    if s.gradient_checkpointing:
        terms = [Term(f"checkpointed block inputs ({a.layers} × h × {c} B/token)",
                      a.layers * a.hidden * c * tokens / GB,
                      "lower micro_batch_size"),
                 Term("one block recomputed in backward", block, "lower micro_batch_size")]
    else:
        terms = [Term(f"activations of {a.layers} blocks", a.layers * block, "set gradient_checkpointing: true")]
    logits = 2 * c * a.vocab * tokens / GB  # the logits in the compute dtype and their gradient
    return terms + [Term(f"logits + their gradient ({s.micro_batch} × {s.row_tokens} tokens × {a.vocab} × {2 * c} B)",
                         logits, "lower micro_batch_size"),
                    Term("loss head float32 chunks (3 × 256 MiB)", LOSS_CHUNKS_GB, "lower micro_batch_size")]


def _engine_while_training(s: LearnerSettings, gpu: GpuSpec, b: int, n: int) -> list[Term]:
    if not s.engine_vllm:  # HF generate runs on the learner itself, or under FSDP on a whole copy
        return [Term(f"HF engine's whole copy of the weights ({b} B/param)", b * n / GB, "set engine: vllm")] \
            if s.fsdp else []
    if s.vllm.sleep_level:
        return [Term(f"vLLM asleep (level {s.vllm.sleep_level}; assumed)", VLLM_ASLEEP_GB, "use GPUs with more memory")]
    return [Term(f"vLLM awake (vllm_sleep_level 0; gpu_memory_utilization {s.vllm.share} × {gpu.memory_gb:.0f} GB)",
                 s.vllm.share * gpu.memory_gb,
                 "set vllm_sleep_level: 1 (vLLM frees its memory while the learner trains)")]


def _rollout_phases(a: Arch, p: Params, s: LearnerSettings, gpu: GpuSpec, resident: tuple[Term, ...],
                    b: int) -> list[PhaseEstimate]:
    ctx = Term("CUDA context, NCCL (assumed)", CONTEXT_GB, "use GPUs with more memory")
    if not s.engine_vllm:
        copy = (Term(f"HF engine's whole copy of the weights ({b} B/param)", b * p.total / GB, "set engine: vllm"),) \
            if s.fsdp else ()
        return [PhaseEstimate(Phase.GENERATE, (*resident, *copy,
                                               *_hf_generate_terms(a, b, s.hf_batch, s.row_tokens, p.total), ctx))]
    v = s.vllm
    share = Term(f"vLLM (gpu_memory_utilization {v.share} × {gpu.memory_gb:.0f} GB)", v.share * gpu.memory_gb,
                 "lower gpu_memory_utilization")
    r = dtype_bytes(v.dtype, a)
    # merged_state_dict: FSDP gathers every weight (one whole tensor at a time before the cast);
    # unsharded weights already in rollout_dtype go in as views, with no copy
    gathered = ((Term(f"gathered copy of the weights for vLLM ({r} B/param)", r * p.total / GB,
                      "use GPUs with more memory"),) if s.fsdp or r != b else ())
    if s.fsdp:
        gathered += (Term(f"one whole parameter being gathered ({b} B/param)", b * p.largest / GB,
                          "use GPUs with more memory"),)
    if v.sleep_level:  # the KV cache sleeps until the next generate
        engine = (Term(f"vLLM weights ({r} B/param, awake)", r * p.total / v.tp / GB,
                       "set rollout_dtype: bfloat16" if r == 4 else "raise tensor_parallel_size"),
                  Term("vLLM activations, CUDA graphs (assumed)", VLLM_OVERHEAD_GB, "use GPUs with more memory"))
    else:
        engine = (share,)
    return [PhaseEstimate(Phase.SAMPLE, (*resident, share, ctx)),
            PhaseEstimate(Phase.SYNC, (*resident, *engine, *gathered, ctx))]


def format_phases(phases: list[PhaseEstimate], gpu: GpuSpec, *, indent: str = "  ") -> list[str]:
    """Aligned lines: each phase's terms and total."""
    width = max(len(t.label) for ph in phases for t in ph.terms) + 2
    lines = []
    for ph in phases:
        lines.append(f"{indent}{ph.phase.value}:")
        lines += [f"{indent}  {t.label:<{width}} {t.gb:6.1f} GB" for t in ph.terms]
        lines.append(f"{indent}  {'total':<{width}} {ph.total:6.1f} GB of {gpu.memory_gb:.0f}")
    return lines


def format_vllm(plan: VllmPlan) -> str:
    return (f"vLLM's share: weights {plan.weights_gb:.1f} GB, activations/graphs {plan.overhead_gb:.1f} GB (assumed), "
            f"KV cache {plan.kv_gb:.1f} GB at {plan.kv_bytes_per_token / 1024:.0f} KiB/token = "
            f"{plan.sequences:.0f} sequences of {plan.row_tokens} tokens")


@dataclass(frozen=True)
class PlannedGpus:
    """The GPUs a stage is planned for (its `gpus` setting): `count` ranks of `memory_gb`
    each. A dry run uses them where set; a real run checks against the GPUs it sees, and
    skips the check on a machine without CUDA. Explore and evaluate use only `memory_gb`
    (each worker runs on its tensor_parallel_size GPUs)."""

    count: Optional[int] = None
    memory_gb: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.count is not None and self.count < 1) or (self.memory_gb is not None and self.memory_gb <= 0):
            raise ValueError("gpus.count must be ≥ 1 and gpus.memory_gb > 0 (or null: the GPUs this machine has)")

