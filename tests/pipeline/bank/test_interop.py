"""`s2lpo bank import` / `export --format authors-jsonl`: the authors' JSONL rollouts, both ways.

The bank is a real one in the testbed's form (char tokenizer, `{question}=` prompts, the
task's step-by-step solutions, half of them with a wrong sum); commands run through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.bank.reader import BankReader
from pipeline.bank.schema import BankRecord, records_to_table
from pipeline.bank.store import BankWriter, open_bank
from pipeline.cli import app
from pipeline.data import Problem, write_problems_jsonl

TEMPLATE = "{question}="
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory, char_tokenizer):
    """A tokenizer directory, 6 prompts with gold answers, and a 2-shard bank of 4 rows each."""
    from pipeline.models import tokenizer_fingerprint
    from pipeline.testbed import task
    from pipeline.verifier import VERIFIER_NAME, VERIFIER_VERSION, score_response

    root = tmp_path_factory.mktemp("interop")
    char_tokenizer.save_pretrained(root / "tok")
    nums = task.sample_numbers(np.random.default_rng(5), 6, task.TaskSpec())
    problems = [Problem(f"p{i}", task.question(tuple(n)), task.answer(tuple(n)), {}) for i, n in enumerate(nums)]
    write_problems_jsonl(problems, root / "prompts.jsonl")
    rng = np.random.default_rng(0)
    records = []
    for p in problems:
        prompt = TEMPLATE.format(question=p.question)
        prompt_ids = char_tokenizer(prompt, add_special_tokens=True)["input_ids"]
        for s in range(4):
            right = s % 2 == 0
            text = task.solution(tuple(int(x) for x in p.question.split("+")), s, offset=0 if right else 10)
            ids = char_tokenizer(text, add_special_tokens=False)["input_ids"] + [char_tokenizer.eos_token_id]
            lps = (-rng.exponential(size=len(ids))).astype(np.float32).tolist()  # not exact in decimal
            sc = score_response(text, p.answer)
            assert sc.correct == right
            records.append(BankRecord(p.id, s, prompt, prompt_ids, text, ids, lps, sc.reward, sc.correct,
                                      sc.extracted, "stop", len(ids)))
    identity = {"schema_version": 1, "tokenizer": tokenizer_fingerprint(char_tokenizer),
                "verifier": {"name": VERIFIER_NAME, "version": VERIFIER_VERSION}, "test": "hand-written"}
    writer = BankWriter(str(root / "bank"), identity)
    writer.write_shard(records_to_table(records[:12]))
    writer.write_shard(records_to_table(records[12:]))
    return root


def _import(world, source, out, *extra):
    return runner.invoke(app, ["bank", "import", str(source), "--out", str(out), "--prompts",
                               str(world / "prompts.jsonl"), "--tokenizer", str(world / "tok"), "--template",
                               TEMPLATE, "--explorer", "testbed-explorer", "--max-new-tokens", "48",
                               "--scoring-workers", "0", *extra])


def _rows(bank):
    reader = BankReader.open(str(bank))
    table = reader.read(np.arange(reader.files.rows))
    return {(r["prompt_id"], r["sample_index"]): r for r in table.to_pylist()}


def test_round_trip_keeps_counts_ids_rewards_and_logprobs(world, tmp_path):
    exported = tmp_path / "rollouts.jsonl"
    res = runner.invoke(app, ["bank", "export", str(world / "bank"), "--format", "authors-jsonl", "--out", str(exported)])
    assert res.exit_code == 0, res.output
    assert "24 records from 2 shards" in res.output
    first = json.loads(exported.read_text().splitlines()[0])
    assert set(first) >= {"prompt_id", "prompt", "prompt_ids", "response", "response_ids", "logprobs", "reward"}
    assert first["reward"] in (0, 1) and isinstance(first["reward"], int)

    res = _import(world, exported, tmp_path / "bank2")
    assert res.exit_code == 0, res.output
    assert "imported 24 rows of 6 prompts" in res.output and "0 cached rewards changed" in res.output
    before, after = _rows(world / "bank"), _rows(tmp_path / "bank2")
    assert before.keys() == after.keys() and len(after) == 24
    for key, row in before.items():
        other = after[key]
        for name in ("prompt", "prompt_token_ids", "response", "response_token_ids", "logprobs", "reward", "correct",
                     "extracted_answer", "finish_reason", "response_length"):
            assert other[name] == row[name], (key, name)
    identity = open_bank(str(tmp_path / "bank2")).identity
    assert identity["imported"]["rescored"] is True and identity["imported"]["rewards_changed"] == 0
    assert identity["imported"]["rows"] == 24 and identity["sampling"]["max_new_tokens"] == 48
    # and back again: the second export is byte-identical to the first
    again = tmp_path / "again.jsonl"
    assert runner.invoke(app, ["bank", "export", str(tmp_path / "bank2"), "--out", str(again)]).exit_code == 0
    assert again.read_bytes() == exported.read_bytes()


def test_import_rescores_with_our_verifier_and_counts_changes(world, tmp_path):
    """The authors' loose matcher cached other verdicts for some rows: the bank keeps ours."""
    lines = []
    exported = tmp_path / "rollouts.jsonl"
    assert runner.invoke(app, ["bank", "export", str(world / "bank"), "--out", str(exported)]).exit_code == 0
    for k, line in enumerate(exported.read_text().splitlines()):
        rec = json.loads(line)
        del rec["sample_index"], rec["finish_reason"]  # as the authors write them
        rec["log_probs"] = rec.pop("logprobs")  # an accepted alias
        if k in (1, 3, 4):
            rec["reward"] = 1 - rec["reward"]
        lines.append(json.dumps(rec))
    exported.write_text("\n".join(lines) + "\n")
    res = _import(world, exported, tmp_path / "bank2")
    assert res.exit_code == 0, res.output
    assert "3 cached rewards changed" in res.output
    assert open_bank(str(tmp_path / "bank2")).identity["imported"]["rewards_changed"] == 3
    before, after = _rows(world / "bank"), _rows(tmp_path / "bank2")
    assert {k: r["reward"] for k, r in after.items()} == {k: r["reward"] for k, r in before.items()}
    assert {k: r["finish_reason"] for k, r in after.items()} == {k: "stop" for k in before}  # < 48 tokens


@pytest.mark.parametrize("line, edit, message", [
    (5, lambda r: r.pop("response_ids"), "no `response_ids` field"),
    (5, lambda r: r.update(logprobs=r["logprobs"][:-1]), "log-probs for"),
    (5, lambda r: r.update(prompt_id="nowhere"), "is not in the --prompts file"),
    (4, lambda r: r.update(prompt_ids=r["prompt_ids"][1:]), "pass --template the explorer used"),
    (5, lambda r: r.update(prompt_ids=r["prompt_ids"][1:]), "differ from those of"),
    (5, lambda r: r.update(sample_index=0), "has sample 0 twice"),
])
def test_bad_records_are_refused_before_anything_is_written(world, tmp_path, line, edit, message):
    exported = tmp_path / "rollouts.jsonl"
    assert runner.invoke(app, ["bank", "export", str(world / "bank"), "--out", str(exported)]).exit_code == 0
    lines = exported.read_text().splitlines()
    rec = json.loads(lines[line])
    edit(rec)
    lines[line] = json.dumps(rec)
    exported.write_text("\n".join(lines) + "\n")
    res = _import(world, exported, tmp_path / "bank2")
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert f"rollouts.jsonl:{line + 1}:" in res.output
    assert not (tmp_path / "bank2" / "bank.json").exists()


def test_import_refuses_an_existing_bank_and_export_an_unknown_format(world, tmp_path):
    res = _import(world, tmp_path / "unused.jsonl", world / "bank")
    assert res.exit_code == 2 and "already a bank" in res.output
    res = runner.invoke(app, ["bank", "export", str(world / "bank"), "--format", "verl", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "authors-jsonl" in res.output
