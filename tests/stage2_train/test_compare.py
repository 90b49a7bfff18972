"""Conclusions across families (stage2_train.compare): intervals, the paired sign-flip test
and per-family signs, on hand-computed values."""

import json
import math

import numpy as np
import pytest

from pipeline.errors import UserError
from stage2_train.compare import compare, format_tables, sign_flip_p, t_interval, write_comparison


def test_t_interval_by_hand():
    mean, half = t_interval([1.0, 2.0, 3.0])  # s = 1, t(2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(t_interval([5.0])[1]) and t_interval([5.0])[0] == 5.0


def test_sign_flip_p_enumerates_every_sign_assignment():
    assert sign_flip_p([1.0, 1.0, 1.0]) == pytest.approx(2 / 8)  # only +++ and --- reach |mean| 1
    assert sign_flip_p([3.0, -1.0]) == pytest.approx(1.0)  # |±3 ± 1| / 2 ≥ 1 for all four
    d = np.array([2.0, 1.0, 1.0, 1.0])
    brute = np.mean([abs(np.dot(s, d)) >= 5 - 1e-9 for s in np.array(np.meshgrid(*[[1, -1]] * 4)).T.reshape(-1, 4)])
    assert sign_flip_p(d) == pytest.approx(brute)
    assert sign_flip_p([0.0, 0.0]) == 1.0


def _run(flawed_final, flawed_20, rest=0.9):
    return [{"step": 0, "eval/pass@1": 0.5, "eval/flawed/pass@1": 0.0, "eval/rest/pass@1": rest},
            {"step": 20, "eval/pass@1": 0.6, "eval/flawed/pass@1": flawed_20, "eval/rest/pass@1": rest},
            {"step": 40, "eval/pass@1": 0.7, "eval/flawed/pass@1": flawed_final, "eval/rest/pass@1": rest}]


def _families():
    # arm "a" beats GRPO by 0.1 in family f0 and 0.2 in f1 (paired by seed); arm "b" loses in f1
    return {"f0": {"grpo": {0: _run(0.4, 0.1), 1: _run(0.6, 0.2)}, "a": {0: _run(0.5, 0.1), 1: _run(0.7, 0.2)},
                   "b": {0: _run(0.5, 0.1), 1: _run(0.7, 0.2)}},
            "f1": {"grpo": {0: _run(0.2, 0.1), 1: _run(0.3, 0.1)}, "a": {0: _run(0.4, 0.1), 1: _run(0.5, 0.1)},
                   "b": {0: _run(0.1, 0.1), 1: _run(0.2, 0.1)}}}


def test_paired_differences_and_whether_they_hold_in_every_family():
    result = compare(_families())
    a = result["a"]["flawed pass@1"]
    assert a.runs == 4 and a.mean == pytest.approx(0.525)
    assert a.family_means == pytest.approx({"f0": 0.6, "f1": 0.45})
    assert a.pairs == 4 and a.diff == pytest.approx(0.15) and a.family_diffs == pytest.approx({"f0": 0.1, "f1": 0.2})
    assert a.p == pytest.approx(2 / 16) and a.holds == "yes"  # all four differences positive
    assert a.diff_ci == pytest.approx(3.182 * np.std([0.1, 0.1, 0.2, 0.2], ddof=1) / 2)
    b = result["b"]["flawed pass@1"]
    assert b.family_diffs == pytest.approx({"f0": 0.1, "f1": -0.1}) and b.holds == "flips"
    assert result["a"]["flawed pass@1 @20"].diff == pytest.approx(0.0)
    assert result["grpo"]["flawed pass@1"].pairs == 0  # the baseline is not paired with itself
    text = format_tables(result, ["f0", "f1"])
    assert "| a | flawed pass@1 | 4 | +15.0 ± " in text and "| +10.0 | +20.0 | yes |" in text
    assert "| b | flawed pass@1 | 4 | +0.0 ± " in text and "| +10.0 | -10.0 | flips |" in text


def test_an_unpaired_seed_is_left_out_of_the_differences():
    fams = _families()
    fams["f1"]["a"][2] = _run(0.9, 0.9)  # seed 2 has no GRPO run to pair with
    a = compare(fams)["a"]["flawed pass@1"]
    assert a.runs == 5 and a.pairs == 4 and a.diff == pytest.approx(0.15)


def test_a_family_without_the_baseline_is_refused():
    fams = _families()
    del fams["f1"]["grpo"]
    with pytest.raises(UserError, match=r"families \['f1'\] have no finished 'grpo' runs"):
        compare(fams)


def test_write_comparison_from_study_roots(tmp_path):
    for fam, arms in _families().items():
        for arm, seeds in arms.items():
            for seed, records in seeds.items():
                run = tmp_path / fam / arm / f"seed{seed}"
                run.mkdir(parents=True)
                (run / "summary.json").write_text("{}")
                (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(UserError, match="no finished runs"):
        write_comparison([tmp_path / "f0", tmp_path / "nothing"], out_dir=tmp_path / "out")
    write_comparison([tmp_path / "f0", tmp_path / "f1"], out_dir=tmp_path / "out")
    record = json.loads((tmp_path / "out/compare.json").read_text())
    assert record["families"] == ["f0", "f1"]
    assert record["arms"]["a"]["flawed pass@1"]["diff"] == pytest.approx(0.15)
    assert record["arms"]["grpo"]["flawed pass@1"]["diff"] is None  # NaN written as null
    assert (tmp_path / "out/compare.png").stat().st_size > 0
    assert "sign-flip" in (tmp_path / "out/compare.md").read_text()
