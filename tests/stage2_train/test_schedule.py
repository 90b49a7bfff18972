import math

import pytest

from stage2_train.schedule import Schedule, anneal_rate, bank_count


def test_linear_matches_the_papers_table():
    # METHOD §2: G = 16, T_mix = 8 → (G_w, G_s) = (16,0) (14,2) (12,4) (10,6) (7,9) (5,11) (3,13) (0,16), then (0,16)
    g_w = [bank_count(anneal_rate(i, schedule=Schedule.LINEAR, t_mix=8), 16) for i in range(1, 10)]
    assert g_w == [16, 14, 12, 10, 7, 5, 3, 0, 0]
    # T = 16 steps: the learner generates 189 of 256 rollouts per prompt slot (0.74×)
    g_w16 = [bank_count(anneal_rate(i, schedule=Schedule.LINEAR, t_mix=8), 16) for i in range(1, 17)]
    assert sum(16 - w for w in g_w16) == 189


def test_linear_end_points_and_value():
    assert anneal_rate(1, schedule=Schedule.LINEAR, t_mix=5) == 1.0
    assert anneal_rate(3, schedule=Schedule.LINEAR, t_mix=5) == pytest.approx(0.5)
    assert anneal_rate(5, schedule=Schedule.LINEAR, t_mix=5) == 0.0
    assert anneal_rate(50, schedule=Schedule.LINEAR, t_mix=5) == 0.0


@pytest.mark.parametrize("schedule,step,expected", [
    (Schedule.COSINE, 3, 0.5),  # u = 0.5: (1 + cos π/2)/2
    (Schedule.COSINE, 2, (1 + math.cos(math.pi / 4)) / 2),
    (Schedule.EXPONENTIAL, 3, 0.05 ** 0.5),
    (Schedule.EXPONENTIAL, 1, 1.0),
    (Schedule.STEP, 4, 1.0),
    (Schedule.STEP, 5, 0.0),
    (Schedule.CONSTANT, 100, 1.0),
])
def test_other_schedules(schedule, step, expected):
    assert anneal_rate(step, schedule=schedule, t_mix=5) == pytest.approx(expected)


def test_initial_rate_scales_and_constant_zero_is_grpo():
    assert anneal_rate(3, schedule=Schedule.LINEAR, t_mix=5, initial_rate=0.5) == pytest.approx(0.25)
    assert anneal_rate(7, schedule=Schedule.CONSTANT, t_mix=5, initial_rate=0.5) == 0.5
    assert all(anneal_rate(i, schedule=Schedule.CONSTANT, t_mix=0, initial_rate=0.0) == 0.0 for i in range(1, 5))


@pytest.mark.parametrize("t_mix", [0, 1])
def test_t_mix_of_one_or_less_is_plain_grpo(t_mix):
    assert anneal_rate(1, schedule=Schedule.LINEAR, t_mix=t_mix) == 0.0


def test_monotone_non_increasing():
    for s in (Schedule.LINEAR, Schedule.COSINE, Schedule.EXPONENTIAL, Schedule.STEP):
        a = [anneal_rate(i, schedule=s, t_mix=10) for i in range(1, 15)]
        assert all(x >= y for x, y in zip(a, a[1:])), s


def test_bank_count_rounds_up_but_not_float_noise():
    assert bank_count(0.3, 10) == 3  # 0.3*10 = 3.0000000000000004
    assert bank_count(0.31, 10) == 4
    assert bank_count(0.0, 8) == 0 and bank_count(1.0, 8) == 8
    assert bank_count(1 / 16, 16) == 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        anneal_rate(0, schedule=Schedule.LINEAR, t_mix=5)
    with pytest.raises(ValueError):
        anneal_rate(1, schedule=Schedule.LINEAR, t_mix=5, initial_rate=1.5)
    with pytest.raises(ValueError):
        bank_count(-0.1, 8)


def test_alpha_at_is_the_configs_schedule_and_zero_without_a_bank():
    import dataclasses

    from stage2_train import step
    from stage2_train.config import AnnealConfig, TrainConfig, alpha_at

    cfg = TrainConfig(steps=10, anneal=AnnealConfig(schedule=Schedule.LINEAR, t_mix=5))
    assert [alpha_at(cfg, i) for i in (1, 3, 5, 9)] == [1.0, pytest.approx(0.5), 0.0, 0.0]
    assert cfg.uses_bank
    grpo = dataclasses.replace(cfg, anneal=AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.0))
    no_bank = dataclasses.replace(cfg, bank=None)
    assert all(alpha_at(c, i) == 0.0 for c in (grpo, no_bank) for i in range(1, 11))
    assert not grpo.uses_bank and not no_bank.uses_bank
    assert step.alpha_at is alpha_at  # one home: the step's α is the config's
