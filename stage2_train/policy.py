"""The learner's side of the loss: packing responses into tensors and per-token log-probs.

Layout: each row is prompt + response, right padded to the batch's longest row.
Targets are shifted by one, so every (N, L−1) tensor here is aligned with the token it
scores: `response_mask[i, t]` is 1 when token t+1 of row i is a response token.
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

    def select(self, index: torch.Tensor) -> "Packed":
        return Packed(self.input_ids[index], self.attention_mask[index], self.response_mask[index],
                      self.explorer_logprobs[index], self.from_bank[index])

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


def token_logprobs(model, batch: Packed, *, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(target) per position (N, L−1), and the policy's entropy per position if asked."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    targets = batch.input_ids[:, 1:]
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = lse - (probs * logits).sum(-1)
    return logp, entropy


@torch.no_grad()
def batched_logprobs(model, batch: Packed, micro_batch_size: int, *, calls: int = 0,
                     skip: torch.Tensor | None = None) -> torch.Tensor:
    """`token_logprobs` over micro-batches, without gradients (old and reference log-probs).
    Rows where `skip` (N,) is true are not computed and come back as zeros. `calls` > the
    number of micro-batches adds forwards whose output is dropped: an FSDP forward is a
    collective, so every rank must run as many as the busiest rank."""
    n = batch.input_ids.shape[0]
    rows = torch.arange(n) if skip is None else (~skip).nonzero().flatten()
    out = torch.zeros(batch.response_mask.shape, device=batch.input_ids.device)
    done = 0
    for idx in rows.split(micro_batch_size) if len(rows) else ():  # all skipped: no forward
        out[idx.to(out.device)] = token_logprobs(model, batch.select(idx))[0]
        done += 1
    for _ in range(done, calls):
        token_logprobs(model, batch.select(torch.arange(1)))
    return out
