import numpy as np
import pytest

from stage2_train.groups import (BankPrompts, BankRows, alternating_sizes, eligible_pool, plan_groups)

POOL = {"a": np.array([0, 1, 2, 3]), "b": np.array([4, 5]), "c": np.array([6, 7, 8, 9])}
CORRECT = np.array([True, False, True, False, False, False, True, True, True, True])


def test_paper_plan_draws_ceil_alpha_g_without_replacement():
    plan = plan_groups(["a", "c"], POOL, alpha=0.5, group_size=4, rng=np.random.default_rng(0))
    assert [len(r) for r in plan.bank_rows] == [2, 2] and plan.online == (2, 2)
    assert set(plan.bank_rows[0]) <= {0, 1, 2, 3} and len(set(plan.bank_rows[0])) == 2
    assert set(plan.bank_rows[1]) <= {6, 7, 8, 9}


def test_short_pool_is_completed_online():
    plan = plan_groups(["b", "missing"], POOL, alpha=1.0, group_size=4, rng=np.random.default_rng(0))
    assert sorted(plan.bank_rows[0].tolist()) == [4, 5] and plan.online == (2, 4)
    assert plan.bank_total == 2 and plan.online_total == 6


def test_alpha_zero_is_all_online():
    plan = plan_groups(["a"], POOL, alpha=0.0, group_size=8, rng=np.random.default_rng(0))
    assert plan.bank_total == 0 and plan.online == (8,)


def test_rewarded_rows_only():
    pool = eligible_pool(POOL, CORRECT, BankRows.REWARDED)
    assert pool["a"].tolist() == [0, 2] and pool["b"].tolist() == []
    plan = plan_groups(["a", "b"], pool, alpha=1.0, group_size=3, rng=np.random.default_rng(0))
    assert sorted(plan.bank_rows[0].tolist()) == [0, 2] and plan.online == (1, 3)
    assert eligible_pool(POOL, CORRECT, BankRows.ALL)["b"].tolist() == [4, 5]


def test_rescue_only_touches_all_wrong_prompts():
    plan = plan_groups(["a", "c"], POOL, alpha=0.5, group_size=4, rng=np.random.default_rng(0),
                       prompts=BankPrompts.RESCUE, online_all_wrong=[False, True])
    assert len(plan.bank_rows[0]) == 0 and len(plan.bank_rows[1]) == 2 and plan.online == (4, 2)
    with pytest.raises(ValueError):
        plan_groups(["a"], POOL, alpha=0.5, group_size=4, rng=np.random.default_rng(0), prompts=BankPrompts.RESCUE)


def test_same_rng_same_plan():
    p1 = plan_groups(["a", "c"], POOL, alpha=0.75, group_size=4, rng=np.random.default_rng(7))
    p2 = plan_groups(["a", "c"], POOL, alpha=0.75, group_size=4, rng=np.random.default_rng(7))
    assert all((x == y).all() for x, y in zip(p1.bank_rows, p2.bank_rows))


def test_alternating_sizes_round_both_up():
    assert alternating_sizes(1.0, 16) == (16, 0)
    assert alternating_sizes(6 / 7, 16) == (14, 3)  # 13.71 → 14 and 2.29 → 3: 17 responses
    assert alternating_sizes(0.0, 16) == (0, 16)
