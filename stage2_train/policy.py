"""The learner's side of the loss: packing responses into tensors and per-token log-probs.

Layout: each row is prompt + response, right padded to the batch's longest row; a
selection of rows (`Packed.select`, a micro-batch) is trimmed to its own longest row, so
no forward runs over columns that are padding in every one of its rows. Targets are
shifted by one, so every (N, W−1) tensor here is aligned with the token it scores:
`response_mask[i, t]` is 1 when token t+1 of row i is a response token.
Log-probs are exact log-softmax values in float32 (`logsumexp` per position, so no
(B, L, V) log-softmax copy is kept beyond one micro-batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stage2_train.rollout import Response


@dataclass
class Packed:
    input_ids: torch.Tensor  # (N, L) long
    attention_mask: torch.Tensor  # (N, L) long
    response_mask: torch.Tensor  # (N, L−1) float, aligned to targets
    explorer_logprobs: torch.Tensor  # (N, L−1) float, 0 where unknown
    from_bank: torch.Tensor  # (N,) bool

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) prompt + response tokens per row (rows are right padded)."""
        return self.attention_mask.sum(dim=1)

    def select(self, index: torch.Tensor) -> "Packed":
        """Rows `index`, trimmed to the longest of them: the columns cut are padding in
        every selected row, so each row's log-probs are the untrimmed ones."""
        ids, attn = self.input_ids[index], self.attention_mask[index]
        width = max(int(attn.sum(dim=1).max()), 2) if len(index) else ids.shape[1]
        return Packed(ids[:, :width], attn[:, :width], self.response_mask[index][:, : width - 1],
                      self.explorer_logprobs[index][:, : width - 1], self.from_bank[index])

    def to(self, device) -> "Packed":
        return Packed(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                      self.explorer_logprobs.to(device), self.from_bank.to(device))


def pack(responses: Sequence[Response], pad_id: int) -> Packed:
    width = max(len(r.prompt_ids) + len(r.token_ids) for r in responses)
    n = len(responses)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    resp = torch.zeros((n, width - 1))
    explorer = torch.zeros((n, width - 1))
    for i, r in enumerate(responses):
        lp, lr = len(r.prompt_ids), len(r.token_ids)
        ids[i, : lp + lr] = torch.tensor(r.prompt_ids + r.token_ids)
        attn[i, : lp + lr] = 1
        resp[i, lp - 1 : lp - 1 + lr] = 1.0  # target t+1 = response token
        if r.explorer_logprobs is not None:
            explorer[i, lp - 1 : lp - 1 + lr] = torch.tensor(r.explorer_logprobs)
    return Packed(ids, attn, resp, explorer, torch.tensor([r.from_bank for r in responses]))


CHUNK_BYTES = 1 << 28  # working set of the vocabulary-wide ops (softmax, upcasts): 256 MiB


def token_logprobs(model, batch: Packed, *, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(target) per position (N, L−1), and the policy's entropy per position if asked.

    Logits larger than one chunk (CHUNK_BYTES as float32; at Qwen3's 152k vocabulary, 4 ×
    4k tokens are 10 GB) go through `SelectiveLogSoftmax`: it upcasts chunk by chunk, saves
    only the logits in their own dtype for backward and builds the gradient chunk by chunk,
    so neither a float32 copy of bf16 logits nor backward's full-size temporaries exist.
    Smaller float32 logits take plain logsumexp/gather (the CPU testbed: the same values,
    bit for bit, as before the chunked path existed). The entropy is chunked as well."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    targets = batch.input_ids[:, 1:]
    if logits.dtype in (torch.float32, torch.float64) and logits.numel() * 4 <= CHUNK_BYTES:
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    else:
        logp = SelectiveLogSoftmax.apply(logits, targets)
    return logp, (entropy_of(logits) if with_entropy else None)


def _chunks(n: int, length: int, vocab: int):
    """(row slice, position slice) pieces of an (n, length, vocab) tensor whose float32
    copy fits in CHUNK_BYTES: whole rows when they fit, else positions of one row."""
    budget = CHUNK_BYTES
    per_row = max(1, length * vocab * 4)
    if per_row <= budget:
        step = max(1, budget // per_row)
        for r in range(0, n, step):
            yield slice(r, min(n, r + step)), slice(0, length)
        return
    step = max(1, budget // (vocab * 4))
    for r in range(n):
        for t in range(0, length, step):
            yield slice(r, r + 1), slice(t, min(length, t + step))


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position (N, L), computed in float32 chunks."""
    n, length, vocab = logits.shape
    out = torch.empty((n, length), dtype=_acc(logits.dtype), device=logits.device)
    for rows, pos in _chunks(n, length, vocab):
        x = logits[rows, pos].to(_acc(logits.dtype))
        lse = torch.logsumexp(x, dim=-1)
        out[rows, pos] = lse - (torch.softmax(x, dim=-1) * x).sum(-1)
    return out


class SelectiveLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[target] per position, upcasting chunk by chunk; saves only the
    logits (in their own dtype) and recomputes the softmax chunk by chunk in backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n, length, vocab = logits.shape
        acc = _acc(logits.dtype)
        out = torch.empty((n, length), dtype=acc, device=logits.device)
        for rows, pos in _chunks(n, length, vocab):
            x = logits[rows, pos].to(acc)
            out[rows, pos] = x.gather(-1, targets[rows, pos].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)
        ctx.save_for_backward(logits, targets)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets = ctx.saved_tensors
        n, length, vocab = logits.shape
        acc = _acc(logits.dtype)
        out = torch.empty_like(logits)
        for rows, pos in _chunks(n, length, vocab):
            g = grad[rows, pos].to(acc).unsqueeze(-1)
            d = torch.softmax(logits[rows, pos].to(acc), dim=-1).mul_(-g)  # ∂/∂x of x[t] − lse(x) = onehot − p
            d.scatter_add_(-1, targets[rows, pos].unsqueeze(-1), g)
            out[rows, pos] = d.to(logits.dtype)
        return out, None


def micro_batches(lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices (into `lengths`) of micro-batches of at most `size` rows. One micro-batch
    keeps the rows in order; several take the rows longest first (stable), so each one,
    trimmed to its longest row, pads as little as it can. The loss normaliser is the
    mini-batch's, so the grouping does not change the update (only float summation order)."""
    n = len(lengths)
    if n <= size:
        return [torch.arange(n)]
    order = torch.sort(lengths.cpu(), descending=True, stable=True).indices
    return list(order.split(size))


@torch.no_grad()
def batched_logprobs(model, batch: Packed, micro_batch_size: int, *, calls: int = 0,
                     skip: torch.Tensor | None = None) -> torch.Tensor:
    """`token_logprobs` over micro-batches (longest rows together, each trimmed to its
    longest row), without gradients or dropout (old and reference log-probs). Rows where `skip` (N,)
    is true are not computed and come back as zeros, as do the trimmed columns. `calls` >
    the number of micro-batches adds forwards whose output is dropped: an FSDP forward is
    a collective, so every rank must run as many as the busiest rank."""
    n = batch.input_ids.shape[0]
    rows = torch.arange(n) if skip is None else (~skip).nonzero().flatten()
    out = torch.zeros(batch.response_mask.shape, device=batch.input_ids.device)
    done, training = 0, model.training
    model.eval()  # π_old and π_ref are the policy itself: no dropout
    try:
        for part in micro_batches(batch.lengths[rows.to(batch.input_ids.device)], micro_batch_size) if len(rows) else ():
            idx = rows[part]  # all skipped: no forward
            logp = token_logprobs(model, batch.select(idx))[0]
            out[idx.to(out.device), : logp.shape[1]] = logp
            done += 1
        for _ in range(done, calls):
            token_logprobs(model, batch.select(torch.arange(1)))
    finally:
        model.train(training)
    return out


def has_dropout(model) -> bool:
    """Whether training forwards of `model` drop anything (dropout modules or attention dropout)."""
    config = getattr(model, "config", None)
    return (any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
            or float(getattr(config, "attention_dropout", 0.0) or 0.0) > 0)
