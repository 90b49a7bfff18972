"""How responses ended, what they hold, and the prompt-id check, on hand-built rows."""

from __future__ import annotations

from pipeline.rehearse.findings import ids_preview, prompt_id_mismatches, response_findings

SPECIALS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"}


def _row(ids, text="x", finish="stop", pid="p0", prompt_ids=(1, 2)):
    return {"prompt_id": pid, "response_token_ids": list(ids), "response": text, "finish_reason": finish,
            "prompt_token_ids": list(prompt_ids)}


def test_counts_stop_ids_truncation_specials_and_empty_responses():
    rows = [_row([5, 6, 151645]), _row([7, 151644, 8, 151643]), _row([9, 9, 9, 9], finish="length"),
            _row([151645], text=""), _row([151644, 3], text=" ", finish="length")]
    f = response_findings(rows, stop_ids=[151643, 151645], special_ids=SPECIALS)
    assert f.rows == 5
    assert f.finish == {"stop": 3, "length": 2}
    assert f.ended_by == {"151645 <|im_end|>": 2, "151643 <|endoftext|>": 1, "none": 2}
    assert f.truncated_share == 0.4
    assert (f.empty_text, f.stop_only) == (2, 1)
    assert f.specials_inside == {"<|im_start|>": 2}  # the final stop token is not "inside"
    assert f.mean_length == (3 + 4 + 4 + 1 + 2) / 5


def test_a_stop_id_the_engine_does_not_know_counts_as_inside_and_the_row_as_not_stopped():
    f = response_findings([_row([5, 151643], finish="length")], stop_ids=[151645], special_ids=SPECIALS)
    assert f.ended_by == {"none": 1} and f.specials_inside == {"<|endoftext|>": 1}


def test_prompt_id_mismatches_name_each_prompt_once():
    rows = [_row([1], pid="a", prompt_ids=[1, 2]), _row([1], pid="a", prompt_ids=[1, 2]),
            _row([1], pid="b", prompt_ids=[3])]
    assert prompt_id_mismatches(rows, [[1, 2], [1, 9], [3]]) == ["a"]
    assert prompt_id_mismatches(rows, [[1, 2], [1, 2], [3]]) == []


def test_ids_preview_shows_head_and_tail_of_long_lists():
    assert ids_preview(range(5)) == "0 1 2 3 4"
    assert ids_preview(range(30), head=2, tail=2) == "0 1 … 28 29  (30 ids)"
