"""pass@k against brute-force enumeration of k-subsets, plus edge cases and errors."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from pipeline.passk import crossover_k, mean_pass_at_k, pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Exact fraction of k-subsets of n answers (first c correct) containing a correct one."""
    answers = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(answers[i] for i in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


ALL_SMALL_CASES = [(n, c, k) for n in range(1, 9) for c in range(n + 1) for k in range(1, n + 1)]


@pytest.mark.parametrize(("n", "c", "k"), ALL_SMALL_CASES)
def test_matches_brute_force_enumeration(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12)


def test_brute_force_covers_all_small_cases() -> None:
    # n from 1 to 8, c from 0 to n, k from 1 to n: sum_n n (n + 1) = 240 triples.
    assert len(ALL_SMALL_CASES) == 240


@pytest.mark.parametrize(("n", "c"), [(1, 0), (1, 1), (4, 1), (7, 3), (16, 5), (200, 37)])
def test_pass_at_1_is_fraction_correct(n: int, c: int) -> None:
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 2, 3), (4, 4, 1), (10, 6, 5), (3, 1, 3)])
def test_too_few_wrong_answers_is_exactly_one(n: int, c: int, k: int) -> None:
    assert n - c < k
    assert pass_at_k(n, c, k) == 1.0


def test_no_correct_answers_is_exactly_zero() -> None:
    assert pass_at_k(1000, 0, 500) == 0.0


@pytest.mark.parametrize(("n", "c", "k"), [(1000, 3, 500), (1000, 1, 1), (1024, 17, 256), (2000, 1990, 5)])
def test_large_n_matches_exact_binomials(n: int, c: int, k: int) -> None:
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    value = pass_at_k(n, c, k)
    assert math.isfinite(value)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(float(exact), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "fragment"),
    [(4, 1, 5, "k <= n"), (4, 1, 0, "k >= 1"), (4, -1, 2, "0 <= c <= n"), (4, 5, 2, "0 <= c <= n")],
)
def test_invalid_counts_raise(n: int, c: int, k: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        pass_at_k(n, c, k)
    assert f"n={n}, c={c}, k={k}" in str(info.value)


def test_mean_over_problems_with_different_n() -> None:
    result = mean_pass_at_k([4, 8, 2], [1, 0, 2], ks=[1, 2])
    assert result[1] == pytest.approx((1 / 4 + 0 + 1) / 3)
    expected_k2 = (float(brute_force_pass_at_k(4, 1, 2)) + 0.0 + 1.0) / 3
    assert result[2] == pytest.approx(expected_k2)
    assert list(result) == [1, 2]


def test_mean_k_larger_than_a_problems_n_names_the_problem() -> None:
    with pytest.raises(ValueError, match=r"problem 2: .*n=3, c=1, k=4"):
        mean_pass_at_k([8, 8, 3], [1, 2, 1], ks=[1, 4])


def test_mean_rejects_mismatched_lengths_and_empty_input() -> None:
    with pytest.raises(ValueError, match="n_correct has 1"):
        mean_pass_at_k([4, 4], [1], ks=[1])
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], [], ks=[1])


@pytest.mark.parametrize(
    ("curve_a", "curve_b", "expected"),
    [
        # a starts below b and catches up at k=8 (equality counts as caught up).
        ({1: 0.2, 2: 0.3, 4: 0.5, 8: 0.7, 16: 0.9}, {1: 0.4, 2: 0.5, 4: 0.6, 8: 0.7, 16: 0.75}, 8),
        # a strictly overtakes at k=4.
        ({1: 0.1, 2: 0.3, 4: 0.61}, {1: 0.4, 2: 0.5, 4: 0.6}, 4),
        # a never catches up.
        ({1: 0.1, 2: 0.2}, {1: 0.4, 2: 0.5}, None),
        # a is not below b at the first k: no crossover by definition.
        ({1: 0.5, 2: 0.6}, {1: 0.4, 2: 0.7}, None),
        ({1: 0.4, 2: 0.6}, {1: 0.4, 2: 0.7}, None),
        # only common ks count, in increasing order regardless of dict order.
        ({16: 0.9, 1: 0.1, 3: 0.9}, {1: 0.3, 16: 0.8, 2: 0.1}, 16),
        # no common ks.
        ({1: 0.1}, {2: 0.3}, None),
    ],
)
def test_crossover_k(curve_a: dict, curve_b: dict, expected: int | None) -> None:
    assert crossover_k(curve_a, curve_b) == expected
