"""Problem loaders: real benchmark rows, DAPO's verl layout, dedup, and every user error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.data import (
    Problem,
    load_problems,
    problem_set_fingerprint,
    question_hash_id,
    write_problems_jsonl,
)
from pipeline.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AIME24 = FIXTURES / "aime24_sample.jsonl"
AIME25 = FIXTURES / "aime25_sample.jsonl"
MATH500 = FIXTURES / "math500_sample.jsonl"
DAPO = FIXTURES / "dapo_verl_sample.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# --- qa layout on real benchmark rows -------------------------------------------------


def test_aime24_rows_get_content_hash_ids_and_exam_meta():
    rows = _rows(AIME24)
    problems = load_problems(str(AIME24))
    assert [p.question for p in problems] == [r["question"] for r in rows]
    assert [p.answer for p in problems] == [r["answer"] for r in rows]
    expected_id = hashlib.sha1(" ".join(rows[0]["question"].split()).encode()).hexdigest()[:16]
    assert problems[0].id == expected_id
    assert problems[0].meta == {"exam": "AIME 2024"}


def test_aime25_uses_id_field_and_stringifies_integer_answers():
    problems = load_problems(str(AIME25))
    assert [p.id for p in problems] == ["0", "1", "2", "3", "4"]
    assert problems[0].answer == "70"
    assert problems[0].meta == {}


def test_math500_keeps_level_and_exam_as_meta():
    problems = load_problems(str(MATH500), layout="qa")
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert problems[0].meta == {"exam": "MATH500", "level": 2}
    assert len({p.id for p in problems}) == 5


def test_hash_id_ignores_whitespace_differences():
    assert question_hash_id("What is  1+1?\n") == question_hash_id(" What is 1+1?")
    assert question_hash_id("What is 1+1?") != question_hash_id("What is 1+2?")


def test_problem_key_is_accepted_as_the_question(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"problem": "2+2?", "answer": "4", "solution": "It is 4.", "tags": ["arith"]}])
    (problem,) = load_problems(str(path))
    assert (problem.question, problem.answer) == ("2+2?", "4")
    assert problem.meta == {"solution": "It is 4."}


def test_problem_is_hashable_and_frozen():
    problem = Problem(id="a", question="q", answer="1", meta={"level": 3})
    assert hash(problem) == hash(Problem(id="a", question="q", answer="1"))
    with pytest.raises(AttributeError):
        problem.answer = "2"  # type: ignore[misc]


# --- verl layout and dedup --------------------------------------------------------------


def test_verl_layout_dedups_repeated_prompts_keeping_the_first():
    rows = _rows(DAPO)
    problems = load_problems(str(DAPO))
    assert [p.id for p in problems] == [rows[0]["extra_info"]["index"], rows[1]["extra_info"]["index"], rows[3]["extra_info"]["index"]]
    assert [p.answer for p in problems] == ["34", "208", "40"]
    assert problems[0].question == rows[0]["prompt"][-1]["content"]
    assert problems[0].meta == {"data_source": "math_dapo", "ability": "MATH"}


def test_verl_without_dedup_keeps_every_row():
    assert len(load_problems(str(DAPO), dedup=False)) == 6


def test_explicit_verl_layout_matches_auto():
    assert load_problems(str(DAPO), layout="verl") == load_problems(str(DAPO))


def test_last_user_message_is_the_question(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "old"},
            {"role": "assistant", "content": "x"}, {"role": "user", "content": "3*3?"}]
    path = _write_jsonl(tmp_path / "v.jsonl", [{"prompt": chat, "reward_model": {"ground_truth": "9"}}])
    (problem,) = load_problems(str(path))
    assert (problem.question, problem.answer, problem.id) == ("3*3?", "9", question_hash_id("3*3?"))


def test_dotted_field_overrides(tmp_path):
    rows = [{"q": {"text": "1+1?"}, "gold": {"value": 2}, "meta": {"uid": 7}, "src": "toy"}]
    path = _write_jsonl(tmp_path / "o.jsonl", rows)
    (problem,) = load_problems(
        str(path), question_field="q.text", answer_field="gold.value", id_field="meta.uid"
    )
    assert problem == Problem(id="7", question="1+1?", answer="2", meta={"src": "toy"})


def test_limit_counts_problems_after_dedup():
    problems = load_problems(str(DAPO), limit=2)
    assert [p.answer for p in problems] == ["34", "208"]


def test_conflicting_answers_for_one_question_name_source_and_id(tmp_path):
    rows = [{"question": "1+1?", "answer": "2", "id": "p1"}, {"question": "1 + 1?", "answer": "2"},
            {"question": "1+1?  ", "answer": "3", "id": "p9"}]
    path = _write_jsonl(tmp_path / "amb.jsonl", rows)
    with pytest.raises(UserError, match=r"amb\.jsonl.*question p1 .*ambiguous"):
        load_problems(str(path))


def test_duplicate_id_with_different_questions_names_the_id(tmp_path):
    rows = [{"question": "1+1?", "answer": "2", "id": "dup-7"}, {"question": "2+2?", "answer": "4", "id": "dup-7"}]
    path = _write_jsonl(tmp_path / "ids.jsonl", rows)
    with pytest.raises(UserError, match=r"ids\.jsonl.*'dup-7'"):
        load_problems(str(path))


# --- other local formats -----------------------------------------------------------------


def test_parquet_copy_loads_like_the_jsonl(tmp_path):
    path = _write_parquet(tmp_path / "dapo.parquet", _rows(DAPO))
    assert load_problems(str(path)) == load_problems(str(DAPO))


def test_parquet_directory_prefers_split_files(tmp_path):
    rows = _rows(MATH500)
    _write_parquet(tmp_path / "train-00000-of-00001.parquet", rows[:3])
    _write_parquet(tmp_path / "test-00000-of-00001.parquet", rows[3:])
    assert [p.question for p in load_problems(str(tmp_path))] == [r["question"] for r in rows[:3]]
    assert [p.question for p in load_problems(str(tmp_path), split="test")] == [r["question"] for r in rows[3:]]


def test_json_list_file(tmp_path):
    path = tmp_path / "aime.json"
    path.write_text(json.dumps(_rows(AIME25)))
    assert load_problems(str(path)) == load_problems(str(AIME25))


def test_write_then_load_round_trips_with_meta(tmp_path):
    problems = load_problems(str(MATH500))
    out = write_problems_jsonl(problems, tmp_path / "splits" / "train.jsonl")
    assert load_problems(str(out)) == problems
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.jsonl"]  # no temp file left


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = write_problems_jsonl([Problem("1", "q1", "x")], tmp_path / "train.jsonl")
    before = target.read_text()
    with pytest.raises(TypeError):
        write_problems_jsonl([Problem("2", "q2", "y"), Problem("3", "q3", "z", meta={"bad": object()})], target)
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_fingerprint_tracks_order_and_content_not_meta():
    a, b = Problem("1", "q1", "x"), Problem("2", "q2", "y")
    base = problem_set_fingerprint([a, b])
    assert len(base) == 64
    assert problem_set_fingerprint([a, b]) == base
    assert problem_set_fingerprint([b, a]) != base
    assert problem_set_fingerprint([a, Problem("2", "q2", "z")]) != base
    assert problem_set_fingerprint([a, Problem("2", "q2", "y", meta={"level": 1})]) == base


# --- hub ids ----------------------------------------------------------------------------


def test_hub_id_goes_through_datasets_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split))
        return datasets.Dataset.from_list(_rows(DAPO))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems = load_problems("BytedTsinghua-SIA/DAPO-Math-17k", split="train")
    assert calls == [("BytedTsinghua-SIA/DAPO-Math-17k", "train")]
    assert problems == load_problems(str(DAPO))


def test_unloadable_hub_id_is_a_user_error(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no-such-owner-x/no-such-set-y.*could not be loaded.*local"):
        load_problems("no-such-owner-x/no-such-set-y")


# --- user errors --------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"nope\.jsonl: file not found"):
        load_problems(str(tmp_path / "nope.jsonl"))


def test_corrupt_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n\n{"question": "2+2?", "answer": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: not valid JSON"):
        load_problems(str(path))


def test_non_object_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["1+1?", "2"]\n')
    with pytest.raises(UserError, match=r"list\.jsonl:1: expected a JSON object"):
        load_problems(str(path))


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=r"broken\.parquet: not a readable parquet file"):
        load_problems(str(path))


def test_unsupported_suffix_names_the_file(tmp_path):
    path = tmp_path / "probs.csv"
    path.write_text("question,answer\n1+1?,2\n")
    with pytest.raises(UserError, match=r"probs\.csv: unsupported file type"):
        load_problems(str(path))


def test_empty_file_is_an_empty_prompt_set(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(UserError, match=r"empty\.jsonl: no problems found"):
        load_problems(str(path))


def test_row_without_answer_names_source_row_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "noans.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?"}])
    with pytest.raises(UserError, match=r"noans\.jsonl line 2: no answer field 'answer'.*answer_field="):
        load_problems(str(path))


def test_verl_row_without_ground_truth_names_the_dotted_field(tmp_path):
    row = {"prompt": [{"role": "user", "content": "1+1?"}], "reward_model": {"style": "rule-based"}}
    path = _write_parquet(tmp_path / "v.parquet", [row])
    with pytest.raises(UserError, match=r"v\.parquet row 1: no answer field 'reward_model\.ground_truth'"):
        load_problems(str(path))


def test_missing_question_field_names_the_field(tmp_path):
    path = _write_jsonl(tmp_path / "noq.jsonl", [{"question": "1+1?", "answer": "2"}, {"answer": "4"}])
    with pytest.raises(UserError, match=r"noq\.jsonl line 2: no question field 'question'.*question_field="):
        load_problems(str(path))


def test_undetectable_layout_lists_the_keys(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "1+1?", "label": "2"}])
    with pytest.raises(UserError, match=r"odd\.jsonl: cannot detect the layout.*label, text"):
        load_problems(str(path))


def test_qa_layout_on_verl_rows_reports_the_question_field():
    with pytest.raises(UserError, match=r"dapo_verl_sample\.jsonl line 1: no question field 'question'"):
        load_problems(str(DAPO), layout="qa")


def test_unknown_layout_names_the_choices():
    with pytest.raises(UserError, match=r"unknown layout 'alpaca'; use one of auto, qa, verl"):
        load_problems(str(AIME24), layout="alpaca")


def test_stratified_subset_keeps_flagged_and_hits_the_share():
    from pipeline.data import Problem, stratified_subset

    problems = [Problem(f"p{i}", f"{i}+1", str(i + 1), {"flawed": i % 10 == 0}) for i in range(100)]
    half = stratified_subset(problems, flag="flawed", fraction=0.5, seed=0)
    assert sum(p.meta["flawed"] for p in half) == 10 and len(half) == 20
    assert [p.id for p in half] == sorted((p.id for p in half), key=lambda s: int(s[1:]))  # order kept
    assert stratified_subset(problems, flag="flawed", fraction=0.5, seed=0) == half
    with pytest.raises(UserError, match="no problem has a true `missing`"):
        stratified_subset(problems, flag="missing", fraction=0.5)
    with pytest.raises(UserError, match="fraction"):
        stratified_subset(problems, flag="flawed", fraction=0.0)
