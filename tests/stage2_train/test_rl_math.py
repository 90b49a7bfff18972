import math

import pytest
import torch

from stage2_train.rl_math import (Aggregation, aggregate, compute_group_advantages, compute_k3_kl,
                                  compute_policy_loss, compute_truncated_is_weights, loss_normaliser)


def test_group_advantage_hand_computed():
    # rewards 1,0,0,1: mean 0.5, Bessel std = sqrt(4·0.25/3) = 0.57735
    adv = compute_group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    s = math.sqrt(1 / 3)
    assert adv.tolist()[0] == pytest.approx([0.5 / (s + 1e-6), -0.5 / (s + 1e-6)] * 1 + [-0.5 / (s + 1e-6), 0.5 / (s + 1e-6)])


def test_equal_rewards_give_zero_advantage():
    assert compute_group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])).abs().sum() == 0


def test_no_std_is_centred_rewards():
    adv = compute_group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), normalize_std=False)
    assert adv.tolist()[0] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_online_baseline_excludes_bank_members():
    # bank rows (first two) rewarded 1; online rows 1, 0 → mean 0.5, std sqrt(0.5)
    rewards = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    online = torch.tensor([[False, False, True, True]])
    adv = compute_group_advantages(rewards, baseline_mask=online)
    s = math.sqrt(0.5) + 1e-6
    assert adv.tolist()[0] == pytest.approx([0.5 / s, 0.5 / s, 0.5 / s, -0.5 / s])


def test_online_baseline_with_equal_online_rewards_is_unnormalised():
    # all online wrong, one bank row right: std of the baseline is 0 → Â = R − mean, not 1/ε
    adv = compute_group_advantages(torch.tensor([[1.0, 0.0, 0.0]]), baseline_mask=torch.tensor([[False, True, True]]))
    assert adv.tolist()[0] == pytest.approx([1.0, 0.0, 0.0])


def test_online_baseline_without_online_members_falls_back_to_group():
    r = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(compute_group_advantages(r, baseline_mask=torch.tensor([[False, False]])),
                          compute_group_advantages(r))


def test_group_of_one_has_zero_advantage():
    assert compute_group_advantages(torch.tensor([[1.0], [0.0]])).abs().sum() == 0


def test_vectorised_matches_loop_on_random_layouts():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p, n = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(2, 9, (1,), generator=g))
        rewards = torch.randint(0, 2, (p, n), generator=g).float()
        mask = torch.rand(p, n, generator=g) > 0.4
        got = compute_group_advantages(rewards, baseline_mask=mask)
        for i in range(p):
            members = [rewards[i, j].item() for j in range(n) if mask[i, j]] or rewards[i].tolist()
            mean = sum(members) / len(members)
            std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1)) if len(members) > 1 else 0.0
            for j in range(n):
                want = (rewards[i, j].item() - mean) / (std + 1e-6) if std > 0 else rewards[i, j].item() - mean
                assert got[i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_k3_kl_hand_computed_and_non_negative():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    # r = log(0.25/0.5) = −log 2: exp(r) − r − 1 = 0.5 + 0.6931 − 1
    assert compute_k3_kl(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    x = torch.randn(100, 7)
    assert (compute_k3_kl(x, torch.randn(100, 7)) >= 0).all()
    assert compute_k3_kl(x, x).abs().max() == 0


def _loss(ratio, adv, **kw):
    logp = torch.tensor([[math.log(ratio)]])
    return compute_policy_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), **kw)


@pytest.mark.parametrize("ratio,adv,expected,clipped", [
    (1.0, 1.0, -1.0, False),
    (1.5, 1.0, -1.2, True),  # positive advantage: capped at 1 + ε
    (0.5, 1.0, -0.5, False),  # ratio below 1 − ε with Â > 0: unclipped term is larger
    (0.5, -1.0, 0.8, True),  # Â < 0: max(0.5, 0.8)
    (1.5, -1.0, 1.5, False),
    (5.0, -1.0, 3.0, False),  # dual clip: min(5, c·|Â| = 3)
])
def test_ppo_clip_and_dual_clip_by_hand(ratio, adv, expected, clipped):
    out = _loss(ratio, adv)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.clip_fraction == float(clipped)
    assert out.dual_clip_fraction == float(ratio == 5.0)


def test_clip_higher():
    assert _loss(1.5, 1.0, clip_high=0.28).loss.item() == pytest.approx(-1.28)
    assert _loss(0.5, -1.0, clip_high=0.28).loss.item() == pytest.approx(0.8)


def test_no_dual_clip():
    assert _loss(5.0, -1.0, dual_clip=None).loss.item() == pytest.approx(5.0)
    with pytest.raises(ValueError):
        _loss(1.0, 1.0, dual_clip=1.0)


def test_gradient_is_zero_where_clipped():
    logp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    compute_policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1)).loss.sum().backward()
    assert logp.grad.item() == 0


def test_luffy_shaping_replaces_ratio_on_shaped_tokens():
    p = 0.3
    logp = torch.tensor([[math.log(p), math.log(p)]], requires_grad=True)
    out = compute_policy_loss(logp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2),
                              shaped=torch.tensor([[True, False]]), shaping_gamma=0.1)
    assert out.loss[0, 0].item() == pytest.approx(-2.0 * p / (p + 0.1))
    assert out.loss[0, 1].item() == pytest.approx(-2.0 * p)  # PPO token: max(−Â·0.3, −Â·0.8) = −0.6
    out.loss[0, 0].backward()
    # d/dlogp of −Â·p/(p+γ) = −Â·γ·p/(p+γ)²
    assert logp.grad[0, 0].item() == pytest.approx(-2.0 * 0.1 * p / (p + 0.1) ** 2)


def test_token_weights_multiply_loss():
    out = compute_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                              token_weights=torch.tensor([[0.5, 1.0]]))
    assert out.loss.tolist()[0] == pytest.approx([-0.5, -1.0])


def test_truncated_is_weights():
    old = torch.log(torch.tensor([[0.2, 0.9], [0.2, 0.9]]))
    explorer = torch.log(torch.tensor([[0.4, 0.3], [0.4, 0.3]]))
    w = compute_truncated_is_weights(old, explorer, torch.tensor([True, False]), cap=1.0)
    assert w.tolist() == [pytest.approx([0.5, 1.0]), [1.0, 1.0]]
    w2 = compute_truncated_is_weights(old, explorer, torch.tensor([True, True]), cap=2.0)
    assert w2[0].tolist() == pytest.approx([0.5, 2.0])


def test_aggregations_by_hand():
    values = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    tok = aggregate(values, mask, Aggregation.TOKEN_MEAN, normaliser=loss_normaliser(mask, Aggregation.TOKEN_MEAN, max_len=3))
    seq = aggregate(values, mask, Aggregation.SEQUENCE_MEAN,
                    normaliser=loss_normaliser(mask, Aggregation.SEQUENCE_MEAN, max_len=3))
    const = aggregate(values, mask, Aggregation.CONSTANT, normaliser=loss_normaliser(mask, Aggregation.CONSTANT, max_len=4))
    assert tok.item() == pytest.approx(6 / 3)
    assert seq.item() == pytest.approx((1.5 + 3.0) / 2)
    assert const.item() == pytest.approx(6 / 8)


@pytest.mark.parametrize("agg", list(Aggregation))
def test_micro_batches_sum_to_the_batch_aggregate(agg):
    g = torch.Generator().manual_seed(1)
    values = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).int()
    mask[:, 0] = 1
    norm = loss_normaliser(mask, agg, max_len=5)
    whole = aggregate(values, mask, agg, normaliser=norm)
    parts = sum(aggregate(values[i:i + 2], mask[i:i + 2], agg, normaliser=norm) for i in range(0, 6, 2))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_every_bank_correction_has_its_terms_by_hand():
    from stage2_train.rl_math import BANK_CORRECTIONS, BankCorrection, BankTerms, Baseline, baseline_mask

    assert set(BANK_CORRECTIONS) == set(BankCorrection)
    old = torch.log(torch.tensor([[0.5, 0.2, 0.0], [0.4, 0.1, 0.0]]).clamp(min=1e-9))
    explorer = torch.log(torch.tensor([[0.25, 0.4, 1.0], [0.8, 0.1, 1.0]]))
    is_bank, mask = torch.tensor([True, False]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    none = BANK_CORRECTIONS[BankCorrection.NONE]
    assert none.terms(None, explorer, is_bank, mask, cap=1.0) == BankTerms()
    assert not none.needs_old_logprobs and not none.uses_explorer_logprobs
    tis = BANK_CORRECTIONS[BankCorrection.TRUNCATED_IS]
    assert tis.needs_old_logprobs and tis.uses_explorer_logprobs
    weights = tis.terms(old, explorer, is_bank, mask, cap=1.0).token_weights
    torch.testing.assert_close(weights[:, :2], torch.tensor([[1.0, 0.5], [1.0, 1.0]]))  # min(0.5/0.25, 1), 0.2/0.4
    with pytest.raises(ValueError, match="need every row's old log-probs"):
        tis.terms(None, explorer, is_bank, mask, cap=1.0)
    luffy = BANK_CORRECTIONS[BankCorrection.LUFFY].terms(None, explorer, is_bank, mask, cap=1.0)
    assert luffy.token_weights is None and luffy.shaped.tolist() == [[True, True, False], [False, False, False]]
    online = torch.tensor([[False, True]])
    assert baseline_mask(Baseline.GROUP, online) is None and baseline_mask(Baseline.ONLINE, online) is online
