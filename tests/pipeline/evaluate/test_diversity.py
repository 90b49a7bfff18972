import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluate.diversity import (Counting, Crossing, DistinctSummary, counted, crossings, distinct_correct,
                                         distinct_correct_counts, summarize_distinct, is_clean_testbed_solution)
from pipeline.evaluate.results import RESULTS_SCHEMA


def test_distinct_correct_counts_different_correct_texts():
    responses = ["12+34=46,46+5=51", "34+12=46,46+5=51", "12+34=46,46+5=51 ", "12+34=46,46+5=61", "12+34=46,46+5=51"]
    correct = [True, True, True, False, True]
    assert distinct_correct(responses, correct) == 2  # the trailing space is no new solution
    assert distinct_correct(responses, correct, normalize_whitespace=False) == 3
    assert distinct_correct(responses, [False] * 5) == 0
    counts = distinct_correct_counts([["a", "b"], ["a", "a"], ["x"]], [[True, True], [True, True], [False]])
    assert counts.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="one verdict per response"):
        distinct_correct(["a"], [True, False])


@pytest.mark.parametrize("response, valid", [
    ("18+25=43,43+93=136\\boxed{136}", True),
    ("93+25=118,18+118=136\\boxed{136}", True),
    (" 25+93=118,118+18=136\\boxed{136}\n", True),   # ends stripped
    ("18+25=33,93+33=136\\boxed{136}", False),  # wrong partial sum, cancelled by a second error
    ("18+25=43,43+93=146\\boxed{146}", False),  # the planted flaw: final sum 10 too high
    ("18+25=43,43+93=136\\boxed{137}", False),  # boxed answer differs from the sum
    ("18+18=36,36+93=129\\boxed{129}", False),  # an operand used twice
    ("18+25=43,18+93=111\\boxed{111}", False),  # second addition does not use the partial sum
    ("\\boxed{136}", False),
    ("18+25=43,43+93=136\\boxed{136} and more", False),
])
def test_clean_testbed_solution_check(response, valid):
    assert is_clean_testbed_solution("93+25+18", response) is valid


def test_counting_keeps_only_clean_solutions_on_the_testbed():
    questions = ["93+25+18"]
    responses = [["18+25=43,43+93=136\\boxed{136}", "18+25=33,93+33=136\\boxed{136}", "x"]]
    correct = [[True, True, False]]
    assert counted(questions, responses, correct, Counting.ANSWER) == [[True, True, False]]
    assert counted(questions, responses, correct, Counting.TESTBED_STEPS) == [[True, False, False]]


def test_summary_over_problems():
    # problems: 3 correct of which 2 distinct; 0 correct; 4 correct, 4 distinct
    s = summarize_distinct(np.array([2, 0, 4]), np.array([3, 0, 4]))
    assert s == DistinctSummary(mean=2.0, mean_solved=3.0, share=6 / 7)
    assert summarize_distinct(np.array([0]), np.array([0])) == DistinctSummary(0.0, None, None)


def test_crossings_of_every_pair():
    curves = {
        "explorer": {1: 0.5, 2: 0.7, 4: 0.85, 8: 0.95},
        "learner": {1: 0.7, 2: 0.75, 4: 0.78, 8: 0.8},
        "trained": {1: 0.8, 2: 0.85, 4: 0.88, 8: 0.9},
    }
    assert crossings(curves) == [Crossing("explorer", "learner", 4),  # 0.85 ≥ 0.78 at k = 4, not at 2
                                 Crossing("explorer", "trained", 8),  # 0.95 ≥ 0.90 only at k = 8
                                 Crossing("learner", "trained", None)]  # never
    assert crossings({"a": {1: 0.5, 2: 0.6}, "b": {1: 0.5, 2: 0.9}}) == []  # equal start: no "lower" curve
    assert crossings({"a": {1: 0.1}, "b": {2: 0.3}}) == []  # no common k


def _write_run(root, label, rows):
    """rows: (problem_id, flawed, responses, verdicts)."""
    cols = {name: [] for name in RESULTS_SCHEMA.names}
    for pid, flawed, responses, verdicts in rows:
        for name, value in (("model", label), ("benchmark", "testbed"), ("problem_id", pid), ("question", "q"),
                            ("answer", "1"), ("flawed", flawed), ("data_source", None), ("n", len(responses)), ("correct", sum(verdicts)),
                            ("responses", responses), ("extracted", ["1"] * len(responses)),
                            ("sample_correct", verdicts), ("lengths", [3] * len(responses)),
                            ("finish_reasons", ["stop"] * len(responses))):
            cols[name].append(value)
    root.mkdir()
    pq.write_table(pa.table(cols, schema=RESULTS_SCHEMA), root / "results.parquet")
    (root / "config.json").write_text(json.dumps({"label": label}))


def test_diversity_command_writes_curves_crossings_and_distinct_counts(tmp_path):
    # explorer: 2 distinct right answers of 4 on p0, 1 right on the flawed p1; learner: p0 4×the same right text
    _write_run(tmp_path / "e", "explorer", [("p0", False, ["a", "b", "a", "x"], [True, True, True, False]),
                                            ("p1", True, ["c", "y", "z", "w"], [True, False, False, False])])
    _write_run(tmp_path / "l", "learner", [("p0", False, ["a"] * 4, [True] * 4),
                                           ("p1", True, ["y"] * 4, [False] * 4)])
    result = CliRunner().invoke(app, ["diversity", str(tmp_path / "e"), f"base={tmp_path / 'l'}",
                                      "--out", str(tmp_path / "div")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "div" / "diversity.json").read_text())
    entry = report["benchmarks"]["testbed"]
    assert report["models"] == ["explorer", "base"]
    # explorer, all problems: p0 c=3, p1 c=1 of n=4 →
    # pass@1 = (3/4 + 1/4)/2 = 0.5, pass@2 = (1 + (1 − C(3,2)/C(4,2)))/2 = 0.75, pass@4 = 1
    assert entry["curves"]["all"]["explorer"] == {"1": 0.5, "2": 0.75, "4": 1.0}
    assert entry["curves"]["all"]["base"] == {"1": 0.5, "2": 0.5, "4": 0.5}
    assert entry["crossings"]["all"] == []  # equal pass@1
    assert entry["crossings"]["flawed"] == [{"lower": "base", "higher": "explorer", "k": None}]
    assert entry["distinct_correct"]["all"]["explorer"] == {"mean": 1.5, "mean_solved": 1.5, "share": 0.75}
    assert entry["distinct_correct"]["all"]["base"] == {"mean": 0.5, "mean_solved": 1.0, "share": 0.25}
    for label, distinct in (("explorer", 1.5), ("base", 0.5)):  # `dvc metrics show`'s few numbers, a file per model
        assert json.loads((tmp_path / "div" / "distinct" / f"{label}.json").read_text()) == {"testbed": {"distinct": distinct}}
    lines = (tmp_path / "div" / "distinct_correct.csv").read_text().splitlines()
    assert lines[0] == "benchmark,model,problem_id,flawed,n,correct,counted,distinct_correct"
    assert "testbed,explorer,p0,False,4,3,3,2" in lines and "testbed,base,p1,True,4,0,0,0" in lines
    curves = (tmp_path / "div" / "passk_curves.csv").read_text().splitlines()
    assert "testbed,flawed,explorer,2,0.5" in curves
    assert (tmp_path / "div" / "diversity.png").read_bytes()[:4] == b"\x89PNG"


def test_diversity_refuses_a_directory_without_results_and_an_unknown_count(tmp_path):
    result = CliRunner().invoke(app, ["diversity", str(tmp_path), "--out", str(tmp_path / "div")])
    assert result.exit_code == 2 and "no results.parquet" in result.output
    result = CliRunner().invoke(app, ["diversity", str(tmp_path), "--out", str(tmp_path / "div"), "--count", "steps"])
    assert result.exit_code == 2 and "--count 'steps': use one of answer, testbed-steps" in result.output
    assert not (tmp_path / "div").exists()
