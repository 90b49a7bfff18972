"""Stage 2 on many processes: torchrun ranks, DDP or FSDP2, and how one step's work splits.

Under `torchrun` (WORLD_SIZE > 1) `s2lpo train` runs one process per GPU, on
`cuda:LOCAL_RANK` with NCCL, or on the CPU with gloo when there is no GPU. Otherwise it is
one process: nothing here communicates, nothing is wrapped, and the run is bit for bit
the single-process one (on `cuda:0` when a GPU is present).

How the ranks share a step so that its update equals the single-process update:
- prompts: each rank takes a contiguous block of the step's prompts (`split_range`) with
  every prompt's whole group of G, so group advantages are over whole groups;
- bank draws: every rank plans all prompts' groups with the same rng (pure and cheap)
  and reads only its own rows, so the draws are the single process's;
- online responses: each rank samples its own prompts, with its own seed;
- mini-batches: every rank draws the same permutation of all P·G responses, so a
  mini-batch is the same set as in one process, each rank holding its members;
- the loss normaliser (token or sequence count) is the whole mini-batch's (all-reduced),
  and each rank's loss is multiplied by the world size because DDP and FSDP average
  gradients over ranks: the average is then the single-process gradient;
- FSDP forwards are collectives, so every rank runs as many micro-batches as the
  busiest one, padding with zero-weight ones;
- rank 0 writes checkpoints, metrics and the model; the others wait at a barrier.

With vLLM tensor parallelism (tp > 1) the ranks with the same `rank // tp` form one
generation group: they sample the same prompts together (vLLM's external launcher) and
each then trains on its own part of the group's prompts.
"""

from __future__ import annotations

import contextlib
import enum
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pipeline.errors import UserError


class Strategy(enum.Enum):
    DDP = "ddp"  # replicate the learner, all-reduce gradients (DistributedDataParallel)
    FSDP = "fsdp"  # shard weights, gradients and Adam states over the ranks (FSDP2 fully_shard)


def split_range(n: int, parts: int, index: int) -> range:
    """Block `index` of `parts` contiguous blocks of range(n) whose sizes differ by at most
    one (the first n % parts blocks are the longer ones, as numpy.array_split)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks; every collective is the identity on one rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: Strategy = Strategy.DDP
    tp: int = 1  # ranks per generation group (vLLM tensor parallelism)
    owns_group: bool = False  # this object initialised the process group (and destroys it)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.active and self.strategy is Strategy.FSDP

    @property
    def generation_leader(self) -> bool:
        """The first rank of its generation group (counts that group's generated tokens)."""
        return self.rank % self.tp == 0

    def rollout_range(self, n: int) -> range:
        """The items (prompts, eval problems) this rank's generation group samples."""
        return split_range(n, self.world_size // self.tp, self.rank // self.tp)

    def train_range(self, n: int) -> range:
        """The prompts whose groups this rank trains on: its part of `rollout_range`."""
        outer = self.rollout_range(n)
        inner = split_range(len(outer), self.tp, self.rank % self.tp)
        return range(outer.start + inner.start, outer.start + inner.stop)

    def sum(self, value: float) -> float:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def max(self, value: int) -> int:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        return self.max(int(flag)) > 0

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (pickled: keep it small)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def from_main(self, fn):
        """Run `fn` on rank 0 only and return its result on every rank. If it fails, every
        rank raises: a UserError with the same message, anything else as a RuntimeError."""
        if not self.active:
            return fn()
        box, error = [None], None
        if self.is_main:
            try:
                box = [("ok", fn())]
            except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
                error, box = exc, [("user" if isinstance(exc, UserError) else "other", str(exc))]
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if error is not None:
            raise error
        if kind == "user":
            raise UserError(value)
        if kind == "other":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(strategy: Strategy = Strategy.DDP, *, tp: int = 1, timeout_minutes: int = 60,
                     env=None) -> Dist:
    """The process group torchrun asked for (its RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* env
    vars), or a single process. A process group that already exists is used as it is."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world <= 1:
        return Dist(device=device, strategy=strategy)
    if world % tp:
        raise UserError(f"tensor_parallel_size {tp} does not divide the {world} torchrun processes; "
                        "launch a multiple of it (torchrun --nproc-per-node)")
    if cuda:
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if cuda else None)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=device,
                strategy=strategy, tp=tp, owns_group=owns)


def prepare_models(model, ref, d: Dist, *, param_dtype: str | None = None, reshard_after_forward: bool = True):
    """(module the loss runs through, the learner, its reference) placed on this rank's
    device: DDP wraps the learner; FSDP2 shards the learner and the reference in place,
    one unit per transformer block plus the root (embeddings, final norm, head)."""
    if not d.active or d.strategy is Strategy.DDP:
        model = model.to(d.device)
        ref = None if ref is None else ref.to(d.device)
        if not d.active:
            return model, model, ref
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        ids = [d.device.index] if d.device.type == "cuda" else None
        # buffers (rotary tables) are constants; syncing them would make every forward a collective
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # torch ≥ 2.13
        no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=ids, **no_sync), model, ref
    if hasattr(model, "peft_config"):
        raise UserError("distributed.strategy fsdp shards a fully fine-tuned learner; with lora.r > 0 use "
                        "distributed.strategy ddp (the frozen base is replicated, the adapter is small)")
    for module in (model, ref):
        if module is not None:
            _fully_shard(module, param_dtype, reshard_after_forward)
    return model, model, ref


def _fully_shard(model, param_dtype: str | None, reshard_after_forward: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if param_dtype is not None:  # compute in param_dtype, keep master weights and reduce gradients in fp32
        policy = MixedPrecisionPolicy(param_dtype=getattr(torch, param_dtype), reduce_dtype=torch.float32)
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mp_policy=policy, reshard_after_forward=reshard_after_forward)


def accumulating(train_model, d: Dist, *, last: bool):
    """DDP: no gradient all-reduce on a mini-batch's micro-batches but the last (no_sync);
    the last backward all-reduces the accumulated gradients."""
    if d.active and d.strategy is Strategy.DDP and not last:
        return train_model.no_sync()
    return contextlib.nullcontext()


def clip_grad_norm(params: list, max_norm: float) -> torch.Tensor:
    """torch's grad-norm clip; with FSDP's sharded (DTensor) gradients the norm is the
    full one, reduced over the shards."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not any(isinstance(g, DTensor) for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.nn.utils.get_total_norm(grads)
    total = total.full_tensor() if isinstance(total, DTensor) else total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank calls it), else `t`."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def gathered_states(model, optimizer, d: Dist) -> tuple[dict | None, dict | None]:
    """FSDP: the whole model state dict, and the optimizer's unless `optimizer` is None, on
    rank 0's CPU (empty elsewhere; every rank must call). Otherwise (None, None): the
    objects hold their state whole."""
    if not d.fsdp:
        return None, None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optim = None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=options)
    state = get_model_state_dict(model, options=options)
    return {k: v for k, v in state.items() if k not in _aliases(model)}, optim


def _aliases(model) -> set[str]:
    """Names of parameters that are another name's tensor (tied embeddings: lm_head.weight),
    which save_pretrained stores once; the gathered copies no longer share storage."""
    seen, aliases = set(), set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        seen.add(id(param))
    return aliases


def load_full_states(model, optimizer, tensors: dict, optimizer_state: dict) -> tuple[list[str], list[str]]:
    """Scatter whole (checkpoint) state dicts into FSDP shards; (missing, unexpected) keys."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    result = set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True))
    return list(result.missing_keys), list(result.unexpected_keys)
