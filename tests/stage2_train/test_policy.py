"""Per-token log-probs and entropy: the chunked, half-precision-aware paths against the plain ones."""

from __future__ import annotations

import pytest
import torch

from stage2_train import policy
from stage2_train.policy import SelectiveLogSoftmax, entropy_of


def _reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    return x.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


@pytest.mark.parametrize("budget", [1 << 28, 3 * 50 * 4, 7 * 4])  # whole batch, a few rows, a few positions
def test_selective_log_softmax_matches_autograd_in_bf16(monkeypatch, budget):
    monkeypatch.setattr(policy, "CHUNK_BYTES", budget)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 9, 50, generator=gen) * 3).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 50, (4, 9), generator=gen)
    weights = torch.randn(4, 9, generator=gen)
    got = SelectiveLogSoftmax.apply(logits, targets)
    (got * weights).sum().backward()
    mine = logits.grad.clone()
    logits.grad = None
    want = _reference(logits, targets)
    (want * weights).sum().backward()
    assert got.dtype == torch.float32 and torch.equal(got, want)  # the same float32 ops per position
    torch.testing.assert_close(mine, logits.grad, rtol=1e-2, atol=1e-2)  # bf16 rounding of the same gradient
    assert (mine.float() - logits.grad.float()).abs().max() <= 2 * torch.finfo(torch.bfloat16).eps * 4


def test_selective_log_softmax_gradcheck_in_float64(monkeypatch):
    monkeypatch.setattr(policy, "CHUNK_BYTES", 3 * 6 * 4)  # 3 positions per chunk
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 6, (2, 5), generator=gen)
    assert torch.autograd.gradcheck(lambda x: SelectiveLogSoftmax.apply(x, targets), (logits,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_entropy_equals_the_whole_computation(monkeypatch, dtype):
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 8, 40, generator=gen) * 2).to(dtype)
    x = logits.float()
    want = torch.logsumexp(x, -1) - (torch.softmax(x, -1) * x).sum(-1)
    assert torch.equal(entropy_of(logits), want)
    monkeypatch.setattr(policy, "CHUNK_BYTES", 5 * 40 * 4)  # 5 positions of one row per chunk
    torch.testing.assert_close(entropy_of(logits), want, rtol=0, atol=1e-6)


def test_token_logprobs_takes_the_chunked_path_only_past_one_chunk(monkeypatch):
    """Small float32 logits keep the plain ops (bit-identical runs); large ones, or bf16, are chunked."""
    from stage2_train.policy import Packed, token_logprobs

    gen = torch.Generator().manual_seed(3)
    table = torch.randn(30, 30, generator=gen)

    class Lm(torch.nn.Module):  # logits = a learnable table lookup
        def __init__(self, dtype):
            super().__init__()
            self.table = torch.nn.Parameter(table.to(dtype))

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.table[input_ids]})

    ids = torch.randint(0, 30, (2, 6), generator=gen)
    batch = Packed(ids, torch.ones_like(ids), torch.ones(2, 5), torch.zeros(2, 5), torch.zeros(2, dtype=torch.bool))
    calls = []
    real = SelectiveLogSoftmax.apply
    monkeypatch.setattr(SelectiveLogSoftmax, "apply", lambda *a: calls.append(a[0].dtype) or real(*a))
    grads = {}
    for budget, dtype in ((1 << 28, torch.float32), (4 * 30 * 4, torch.float32), (1 << 28, torch.bfloat16)):
        monkeypatch.setattr(policy, "CHUNK_BYTES", budget)
        model = Lm(dtype)
        logp, entropy = token_logprobs(model, batch, with_entropy=True)
        logp.sum().backward()
        grads[(budget, dtype)] = model.table.grad.float()
        assert logp.dtype == torch.float32 and entropy.shape == (2, 5)
    assert calls == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(grads[(4 * 30 * 4, torch.float32)], grads[(1 << 28, torch.float32)])
