import numpy as np
import pytest

from pipeline.bank.draw import draw_rows

POOL = {"a": np.arange(0, 8), "b": np.arange(8, 11), "c": np.arange(11, 12)}


def test_draws_are_distinct_rows_of_the_right_prompt():
    d = draw_rows(POOL, [("a", 5), ("b", 2), ("c", 1)], np.random.default_rng(0))
    assert [len(r) for r in d.rows] == [5, 2, 1] and d.shortfall == (0, 0, 0)
    for (pid, _), rows in zip([("a", 5), ("b", 2), ("c", 1)], d.rows):
        assert len(set(rows.tolist())) == len(rows) and set(rows.tolist()) <= set(POOL[pid].tolist())


def test_short_pools_give_everything_and_report_the_shortfall():
    d = draw_rows(POOL, [("b", 5), ("missing", 3), ("a", 0)], np.random.default_rng(0))
    assert sorted(d.rows[0].tolist()) == [8, 9, 10] and d.shortfall == (2, 3, 0)
    assert len(d.rows[1]) == 0 and len(d.rows[2]) == 0


def test_same_rng_state_same_draw_and_independent_requests():
    a = draw_rows(POOL, [("a", 4), ("a", 4)], np.random.default_rng(7))
    b = draw_rows(POOL, [("a", 4), ("a", 4)], np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a.rows, b.rows))
    assert not np.array_equal(a.rows[0], a.rows[1])  # two groups of one prompt draw independently


def test_every_row_is_equally_likely():
    rng = np.random.default_rng(0)
    hits = np.zeros(8)
    for _ in range(4000):
        hits[draw_rows(POOL, [("a", 3)], rng).rows[0]] += 1
    assert np.allclose(hits / hits.sum(), 1 / 8, atol=0.01)


def test_negative_count_is_an_error():
    with pytest.raises(ValueError, match="'a'"):
        draw_rows(POOL, [("a", -1)], np.random.default_rng(0))
