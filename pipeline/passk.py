"""pass@k: the unbiased estimator of Chen et al. (2021, "Evaluating Large Language
Models Trained on Code", the human-eval paper), as small pure functions.

For one problem with n sampled answers of which c are correct, the probability that
at least one of k answers drawn without replacement from those n is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)                                   (1)

which is 1 exactly when n - c < k (every k-subset must contain a correct answer).
Binomials overflow floats for the n we use (hundreds of samples), so (1) is evaluated
in the product form

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)          (2)

which only multiplies numbers in [0, 1]. For k = 1 the product telescopes to
(n - c) / n, so pass@1 = c / n: the fraction of sampled answers that are correct,
and `mean_pass_at_k(..., ks=[1])` is the mean per-problem accuracy.

The benchmark number is the mean of (1) over problems; problems may have been
sampled a different number of times, but each k must be <= every problem's n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k), via product form (2).

    Args:
        n: number of answers sampled for the problem (n >= 1).
        c: how many of them were judged correct (0 <= c <= n).
        k: budget of attempts (1 <= k <= n).

    Returns:
        A probability in [0, 1]; exactly 1.0 when n - c < k, exactly 0.0 when c = 0.

    Raises:
        ValueError: when the counts are inconsistent (message names n, c, k and the fix).
    """
    n, c, k = int(n), int(c), int(k)
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got n={n}, c={c}, k={k}; use k in [1, n]")
    if k > n:
        raise ValueError(f"pass@k needs k <= n, got n={n}, c={c}, k={k}; sample at least k answers or lower k")
    if c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}, k={k}; c counts correct answers among the n")
    if n - c < k:
        return 1.0
    # (2): i runs over the c largest denominators n-c+1 .. n; each factor is in [0, 1).
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def mean_pass_at_k(
    n_samples: Sequence[int] | np.ndarray,
    n_correct: Sequence[int] | np.ndarray,
    ks: Sequence[int],
) -> dict[int, float]:
    """Benchmark pass@k: the mean over problems p of pass_at_k(n_p, c_p, k), for each k.

    Args:
        n_samples: per-problem number of sampled answers n_p, shape [P].
        n_correct: per-problem number of correct answers c_p, shape [P].
        ks: the budgets k to report; each must satisfy 1 <= k <= min_p n_p.

    Returns:
        {k: mean_p pass@k} in the order of `ks`. With ks=[1] this is mean_p c_p / n_p.

    Raises:
        ValueError: on mismatched lengths, no problems, or a k that is invalid for some
            problem (the message names the first such problem index).
    """
    n_arr = np.asarray(n_samples, dtype=np.int64).reshape(-1)
    c_arr = np.asarray(n_correct, dtype=np.int64).reshape(-1)
    if n_arr.shape != c_arr.shape:
        raise ValueError(
            f"n_samples has {n_arr.size} problems but n_correct has {c_arr.size}; pass one count per problem to each"
        )
    if n_arr.size == 0:
        raise ValueError("mean_pass_at_k got no problems; pass at least one (n, c) pair")
    result: dict[int, float] = {}
    for k in ks:
        per_problem = np.empty(n_arr.size, dtype=np.float64)
        for p, (n, c) in enumerate(zip(n_arr.tolist(), c_arr.tolist())):
            try:
                per_problem[p] = pass_at_k(n, c, k)
            except ValueError as exc:
                raise ValueError(f"problem {p}: {exc}") from None
        result[int(k)] = float(per_problem.mean())
    return result


def crossover_k(curve_a: Mapping[int, float], curve_b: Mapping[int, float]) -> int | None:
    """The smallest k at which curve a catches up with curve b after starting below it.

    Over the ks common to both curves, in increasing order: if a(k_min) < b(k_min), return
    the first k with a(k) >= b(k); otherwise (a is not below b at the first k, or never
    reaches it, or there are no common ks) return None. Typical use: the budget k at which
    the RL-trained model's pass@k is overtaken by the base model's (pass a=base, b=RL).

    Args:
        curve_a: {k: pass@k} of the curve that starts lower.
        curve_b: {k: pass@k} of the reference curve.
    """
    common = sorted(set(curve_a) & set(curve_b))
    if not common or curve_a[common[0]] >= curve_b[common[0]]:
        return None
    for k in common[1:]:
        if curve_a[k] >= curve_b[k]:
            return int(k)
    return None
