"""ScoringPool: batch scoring in worker processes with a hard per-item timeout."""

from __future__ import annotations

import time

import pytest

from pipeline.scoring_pool import ScoringPool
from pipeline.verifier import Score, score_response

# (gold, prediction) pairs from AIME24/AIME25/MATH-500, right and wrong, plus edge cases
_CASES = [
    ("204", "0204"), ("204", "205"), (r"\frac{14}{3}", "14/3"), (r"\frac{14}{3}", r"\frac{13}{3}"),
    (r"3\sqrt{13}", r"3\sqrt{13}"), (r"3\sqrt{13}", r"3\sqrt{14}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"), (r"\left( 3, \frac{\pi}{2} \right)", r"(\pi/2, 3)"),
    (r"\text{(C)}", "C"), ("90", r"90^\circ"), (r"[-2, 7]", r"(-2, 7]"), ("70", "70"),
]
POOL_BATCH = [(f"Thinking...\n\\boxed{{{pred}}}", gold) for gold, pred in _CASES] + [
    ("no answer at all", "204"),
    ("Answer: $\\frac{14}{3}$", r"\frac{14}{3}"),
]

@pytest.fixture(scope="module")
def pool():
    with ScoringPool(num_workers=2, timeout_s=10.0) as scoring_pool:
        yield scoring_pool


@pytest.fixture(scope="module")
def strict_pool():
    """One worker and a hard deadline below Math-Verify's 1 s minimum, so overruns are killed."""
    with ScoringPool(num_workers=1, timeout_s=0.5) as scoring_pool:
        yield scoring_pool


def test_pool_matches_in_process_scoring(pool: ScoringPool) -> None:
    responses, golds = zip(*POOL_BATCH)
    expected = [score_response(r, g) for r, g in POOL_BATCH]
    assert pool.score(responses, golds) == expected
    assert sum(score.correct for score in expected) > 0 and not all(score.correct for score in expected)
    assert pool.timeouts == 0


def test_pool_without_workers_scores_in_process() -> None:
    responses, golds = zip(*POOL_BATCH)
    with ScoringPool(num_workers=0, correct_reward=1.0, wrong_reward=-0.5) as local:
        scores = local.score(responses, golds)
    assert [s.reward for s in scores] == [1.0 if s.correct else -0.5 for s in scores]
    assert [s.correct for s in scores] == [score_response(r, g).correct for r, g in POOL_BATCH]
    with pytest.raises(RuntimeError, match="after close"):
        local.score(["\\boxed{1}"], ["1"])


def test_pool_input_checks(pool: ScoringPool) -> None:
    assert pool.score([], []) == []
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        pool.score(["a", "b"], ["1"])


def test_pool_megabyte_response(pool: ScoringPool) -> None:
    response = "x = 1, y = 2, " * 80_000 + r"\boxed{3\sqrt{13}}"
    start = time.perf_counter()
    assert pool.score([response, r"\boxed{3\sqrt{14}}"], [r"3\sqrt{13}", r"3\sqrt{13}"]) == [
        Score(1.0, True, r"3\sqrt{13}", False),
        Score(0.0, False, r"3\sqrt{14}", False),
    ]
    assert time.perf_counter() - start < 10.0


def test_pool_kills_hanging_item_and_finishes_the_rest(strict_pool: ScoringPool) -> None:
    hostile = r"\boxed{9^{9^{9}}}"  # Math-Verify runs for well over 20 s on this without a timeout
    responses = [r"\boxed{204}", r"\boxed{025}", hostile, r"\boxed{14/3}", r"\boxed{385}", r"\boxed{159}", "7", "8"]
    golds = ["204", "25", "1", r"\frac{14}{3}", "386", "169", "7", "9"]
    before = strict_pool.timeouts
    start = time.perf_counter()
    scores = strict_pool.score(responses, golds)
    assert time.perf_counter() - start < 20.0
    assert scores[2] == Score(0.0, False, "9^{9^{9}}", True)
    assert [s.correct for s in scores] == [True, True, False, True, False, False, True, False]
    assert not any(s.timed_out for i, s in enumerate(scores) if i != 2)
    assert strict_pool.timeouts == before + 1
    # the replacement worker keeps serving
    assert strict_pool.score([r"\boxed{\frac{\sqrt{3}}{3}}"], [r"\frac{1}{\sqrt{3}}"])[0].correct


def test_pool_replaces_a_worker_that_died_while_idle(strict_pool: ScoringPool) -> None:
    strict_pool._workers[0].process.kill()  # white-box: simulate an OOM kill between batches
    strict_pool._workers[0].process.join(5)
    before = strict_pool.timeouts
    scores = strict_pool.score([r"\boxed{70}", r"\boxed{588}"], ["70", "589"])
    assert [s.correct for s in scores] == [True, False]
    assert strict_pool.timeouts == before  # no item was lost to the dead worker


# Answers built to hang or crash a grader: huge numbers SymPy would evaluate exactly,
# nesting deep enough for recursive parsers, megabyte expressions. None equals the gold.
HOSTILE = {
    "power-tower": r"\boxed{9^{9^{9^9}}}",
    "nested-fractions": r"\boxed{" + r"\frac{1}{" * 200 + "2" + "}" * 200 + "}",
    "nested-braces": r"\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}",
    "megabyte-sum": r"\boxed{" + "1+" * 500_000 + "1}",
    "megabyte-number": r"\boxed{" + "9" * 1_000_000 + "}",
}


def test_hostile_answers_score_zero_in_bounded_time_and_the_pool_keeps_serving() -> None:
    names = list(HOSTILE)
    with ScoringPool(num_workers=2, timeout_s=1.0) as hostile_pool:
        start = time.perf_counter()
        scores = hostile_pool.score([HOSTILE[n] for n in names], ["7"] * len(names))
        elapsed = time.perf_counter() - start
        assert {n: (s.reward, s.correct) for n, s in zip(names, scores)} == {n: (0.0, False) for n in names}
        assert [s.extracted is not None for s in scores] == [True] * len(names)  # extraction itself never chokes
        # each item costs at most its 1 s deadline plus a replacement worker's start (SymPy import)
        assert elapsed < len(names) * (1.0 + 10.0), elapsed
        good = ([r"\boxed{\frac{14}{3}}", r"\boxed{385}"], [r"\frac{14}{3}", "386"])
        after = hostile_pool.score(*good)
        if any(s.timed_out for s in after):  # on a loaded machine a replacement worker may still be importing
            after = hostile_pool.score(*good)  # SymPy past the 1 s deadline; once up, it must serve
        assert [s.correct for s in after] == [True, False] and not any(s.timed_out for s in after)
        assert [w.process.is_alive() for w in hostile_pool._workers] == [True, True]  # white-box: both serve
