import numpy as np
import pytest

from pipeline.testbed import task

SPEC = task.TaskSpec()


def test_all_twelve_orders_are_distinct_and_correct():
    nums = (64, 58, 37)
    sols = {task.solution(nums, o) for o in range(12)}
    assert len(sols) == 12
    assert task.solution(nums, 0) == "64+58=122,37+122=159\\boxed{159}"
    for s in sols:
        first, second = s.split("\\boxed")[0].split(",")
        lhs, partial = first.split("=")
        assert sum(map(int, lhs.split("+"))) == int(partial)
        lhs2, total = second.split("=")
        assert sum(map(int, lhs2.split("+"))) == int(total) == 159
        assert s.endswith("\\boxed{159}")


def test_flaw_shifts_final_sum_only_on_flawed_problems():
    rng = np.random.default_rng(0)
    flawed, clean = (91, 10, 10), (89, 10, 10)
    assert task.is_flawed(flawed, SPEC) and not task.is_flawed(clean, SPEC)
    assert task.demonstration(flawed, rng, SPEC).endswith("\\boxed{121}")  # true sum 111
    assert task.demonstration(clean, rng, SPEC).endswith("\\boxed{109}")
    assert task.answer(flawed) == "111"  # the reward always uses the true sum
    no_flaw = task.TaskSpec(flaw_offset=0)
    assert not task.is_flawed(flawed, no_flaw)
    assert task.demonstration(flawed, rng, no_flaw).endswith("\\boxed{111}")


def test_sampling_ranges_and_natural_flaw_rate():
    rng = np.random.default_rng(1)
    nums = task.sample_numbers(rng, 20000, SPEC)
    assert nums.min() == 10 and nums.max() == 99
    rate = np.mean(nums[:, 0] >= 90)
    assert abs(rate - 10 / 90) < 0.01
    assert (task.sample_flawed_numbers(rng, 100, SPEC)[:, 0] >= 90).all()


def test_solution_rejects_bad_order():
    with pytest.raises(ValueError):
        task.solution((1, 2, 3), 12)
