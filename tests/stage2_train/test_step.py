"""One step's update on the tiny world: old log-probs across PPO epochs, and micro-batches
trimmed to their own longest row (the same loss and gradient as the untrimmed batch)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stage2_train import ppo as ppo_mod
from stage2_train import rl_math
from stage2_train import step as step_mod
from stage2_train.policy import Packed, batched_logprobs, micro_batches, pack, token_logprobs



def _setup(train_config, **changes):
    from stage2_train.setup_run import setup
    from stage2_train.step import alpha_at, batch_prompts

    cfg = train_config(eval=dataclasses.replace(train_config().eval, every=0, problems=None), **changes)
    run = setup(cfg, echo=lambda *_: None)
    step = 2  # α = 0.5: bank rows and online responses of varied lengths in every group
    prompts = batch_prompts(len(run.rollouts.problems), cfg.prompts_per_step, step, cfg.seed)
    collected = step_mod.collect(run, step, prompts, alpha=alpha_at(cfg, step), group_size=cfg.group_size,
                                 timer=step_mod.Timer())
    run.learner.train_model.train()
    return run, collected, step


def _row_key(ids: torch.Tensor, attn: torch.Tensor) -> tuple:
    return tuple(ids[attn > 0].tolist())


@pytest.mark.slow
def test_later_epochs_clip_against_the_old_policy(train_config, monkeypatch):
    """With ppo_epochs = 2, every row's old log-prob in epoch 2 is π_old (the weights before
    the step), also for the first mini-batch's rows whose old log-probs came from the first
    update's own forward: their epoch-2 ratio equals the ratio against old log-probs
    computed separately, not 1."""
    run, collected, step = _setup(train_config, ppo_epochs=2, lr=1e-2, micro_batch_size=4)
    batch = pack(collected.responses, run.learner.tokenizer.pad_token_id)
    keys = {_row_key(batch.input_ids[i], batch.attention_mask[i]): i for i in range(len(batch.input_ids))}
    assert len(keys) == len(batch.input_ids)  # every row is identified by its tokens
    apart = batched_logprobs(run.learner.model, batch, 1)  # every old log-prob computed on its own, before any update
    forwards, losses = [], []
    real_logprobs, real_loss = ppo_mod.token_logprobs, rl_math.compute_policy_loss

    def spy_logprobs(model, part, **kw):
        if kw.get("with_entropy"):  # a training forward (the no-grad passes take the default)
            forwards.append([keys[_row_key(part.input_ids[i], part.attention_mask[i])]
                             for i in range(len(part.input_ids))])
        return real_logprobs(model, part, **kw)

    def spy_loss(logp, old, adv, mask, **kw):
        losses.append((logp.detach().clone(), old.detach().clone(), mask.clone()))
        return real_loss(logp, old, adv, mask, **kw)

    monkeypatch.setattr(ppo_mod, "token_logprobs", spy_logprobs)
    monkeypatch.setattr(rl_math, "compute_policy_loss", spy_loss)
    step_mod.update(run, collected, step, step_mod.Timer())
    per_epoch = len(forwards) // 2
    assert len(forwards) == len(losses) == 2 * per_epoch and per_epoch == 6  # 24 rows: 2 mini-batches × 3 micro
    first_mini = {r for rows in forwards[:3] for r in rows}
    checked = 0
    for rows, (logp, old, mask) in zip(forwards[per_epoch:], losses[per_epoch:]):
        for i, row in enumerate(rows):
            m = mask[i] > 0
            want = torch.exp(logp[i][m] - apart[row, : logp.shape[1]][m])
            got = torch.exp(logp[i][m] - old[i][m])
            torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
            if row in first_mini:
                checked += 1
                assert float((want - 1).abs().max()) > 1e-3  # the weights moved: the ratio is not 1
    assert checked == len(first_mini) == 12


def test_first_mini_batch_old_logprobs_are_never_read_after_the_weights_moved():
    old = ppo_mod.OldLogprobs(torch.zeros(3, 4), pending=torch.tensor([True, False, False]))
    logp = torch.arange(8.0).view(2, 4)
    assert torch.equal(old.take(torch.tensor([0, 1]), logp), torch.tensor([[0.0, 1, 2, 3], [0, 0, 0, 0]]))
    old.weights_moved()
    assert torch.equal(old.take(torch.tensor([0]), logp[:1] + 9), torch.tensor([[0.0, 1, 2, 3]]))  # cached
    fresh = ppo_mod.OldLogprobs(torch.zeros(2, 4), pending=torch.tensor([True, False]))
    fresh.weights_moved()
    with pytest.raises(RuntimeError, match="after an optimizer step"):
        fresh.take(torch.tensor([0]), logp[:1])


def test_select_trims_to_the_longest_selected_row():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0], [5, 6, 7, 0, 0]])
    attn = (ids > 0).long()
    batch = Packed(ids, attn, torch.ones(3, 4), torch.zeros(3, 4), torch.tensor([False, True, False]))
    part = batch.select(torch.tensor([2, 1]))
    assert part.input_ids.tolist() == [[5, 6, 7], [5, 6, 0]] and part.response_mask.shape == (2, 2)
    assert part.from_bank.tolist() == [False, True] and batch.select(torch.tensor([0])).input_ids.shape == (1, 5)


def test_micro_batches_take_the_longest_rows_together():
    lengths = torch.tensor([3, 9, 5, 9, 1, 7])
    assert [m.tolist() for m in micro_batches(lengths, 6)] == [[0, 1, 2, 3, 4, 5]]  # one: rows in order
    assert [m.tolist() for m in micro_batches(lengths, 2)] == [[1, 3], [5, 2], [0, 4]]


@pytest.mark.slow
def test_trimmed_micro_batches_give_the_untrimmed_loss_and_gradient(train_config, monkeypatch):
    """A mini-batch in trimmed, length-sorted micro-batches has the loss and gradient of the
    whole mini-batch in one untrimmed forward, and each forward runs at its own longest row."""
    run, collected, _ = _setup(train_config, micro_batch_size=4)
    lc, model = run.cfg.loss, run.learner.train_model
    batch = pack(collected.responses, run.learner.tokenizer.pad_token_id)
    n = len(batch.input_ids)
    assert int(batch.lengths.min()) < int(batch.lengths.max()) - 4  # varied lengths: trimming has work to do
    adv = torch.linspace(-1.5, 1.5, n)
    old = ppo_mod.OldLogprobs(batched_logprobs(model, batch, 3) - 0.05)  # ratios ≠ 1: clipping is exercised
    ref = batched_logprobs(model, batch, 5) + 0.1
    inputs = ppo_mod.LossInputs(batch, torch.arange(n), old, adv, ref)
    norm = rl_math.loss_normaliser(batch.response_mask, lc.aggregation, max_len=run.cfg.max_new_tokens)

    widths, real = [], ppo_mod.token_logprobs

    def spy(m, part, **kw):
        widths.append((part.input_ids.shape[1], int(part.lengths.max())))
        return real(m, part, **kw)

    monkeypatch.setattr(ppo_mod, "token_logprobs", spy)
    loss = 0.0
    for micro in micro_batches(batch.lengths, 4):
        part = ppo_mod._micro_loss(model, inputs.select(micro), lc, norm,
                                   {k: 0.0 for k in ("kl", "tokens", "loss", "entropy", "clip", "dual_clip")})
        part.backward()
        loss += float(part.detach())
    trimmed = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert widths and all(w == longest for w, longest in widths) and len(widths) == 6
    assert sum(w < batch.input_ids.shape[1] for w, _ in widths) >= 3  # most forwards are narrower than the batch
    model.zero_grad(set_to_none=True)

    logp, _ = real(model, batch)  # the untrimmed path: all rows at the batch's width, one forward
    m = batch.response_mask
    pl = rl_math.compute_policy_loss(logp, old.full(), adv, m, clip_low=lc.clip_low, clip_high=lc.clip_high,
                                     dual_clip=lc.dual_clip)
    whole = rl_math.aggregate(pl.loss + lc.kl_coef * rl_math.compute_k3_kl(logp, ref), m, lc.aggregation,
                              normaliser=norm)
    whole.backward()
    assert loss == pytest.approx(float(whole.detach()), rel=1e-6, abs=1e-9)
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(trimmed[k], p.grad, rtol=1e-5, atol=1e-8)
    model.zero_grad(set_to_none=True)


def test_batched_logprobs_equal_the_full_width_forward(tiny_model):
    gen = torch.Generator().manual_seed(0)
    from stage2_train.rollout import Response

    rows = [Response(tuple(torch.randint(4, 100, (5,), generator=gen).tolist()),
                     tuple(torch.randint(4, 100, (k,), generator=gen).tolist()), "", 0.0, False, False, False)
            for k in (2, 30, 7, 19, 1)]
    batch = pack(rows, 0)
    with torch.no_grad():
        want = token_logprobs(tiny_model, batch)[0] * batch.response_mask
    got = batched_logprobs(tiny_model, batch, 2)
    torch.testing.assert_close(got * batch.response_mask, want, rtol=0, atol=2e-6)
    assert float(got[4, 5:].abs().sum()) == 0.0  # the shortest row, alone in its micro-batch: trimmed columns are 0


def test_old_and_reference_passes_run_without_dropout(char_tokenizer):
    """LoRA dropout > 0: the no-grad passes are the policy itself (eval mode), the same on
    every call, and the model comes back in train mode."""
    from peft import LoraConfig, get_peft_model

    from pipeline.testbed.model import ModelShape, build_model
    from stage2_train.policy import has_dropout
    from stage2_train.rollout import Response

    plain = build_model(ModelShape(layers=1, hidden=64), char_tokenizer, seed=0)
    assert not has_dropout(plain)
    model = get_peft_model(plain, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.5, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.3)  # a trained adapter: dropout on its input changes the output
    assert has_dropout(model)
    gen = torch.Generator().manual_seed(0)
    batch = pack([Response((1, 5, 6, 7), tuple(torch.randint(4, 100, (9,), generator=gen).tolist()), "", 0.0,
                           False, False, False)] * 3, 0)
    model.train()
    a, b = batched_logprobs(model, batch, 2), batched_logprobs(model, batch, 2)
    assert model.training and torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(a * batch.response_mask, token_logprobs(model, batch)[0] * batch.response_mask,
                                   rtol=0, atol=2e-6)
