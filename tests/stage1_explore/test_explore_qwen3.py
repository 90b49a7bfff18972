"""Explore on the real Qwen3 tokenizer with a tiny random Qwen3: the stop set, the
truncated-reward policy and the log-prob convention land in bank.json, and the rows agree
with them (tests/conftest.py: `tiny_qwen3_dir`, `steer`)."""

import pytest

from pipeline.bank.inspect import misplaced_stops, verify_bank
from pipeline.bank.reader import BankReader
from pipeline.bank.store import open_bank
from pipeline.data import Problem, write_problems_jsonl
from pipeline.engines.hf import HFEngine
from pipeline.rewards import TruncatedReward
from pipeline.scoring_pool import ScoringPool
from stage1_explore.config import EngineKind, ExploreConfig
from stage1_explore.explore import Job, _sample_and_score, job_seeds, run_explore

ENDOFTEXT, IM_END, PLAIN = 151643, 151645, 8
pytestmark = pytest.mark.slow  # the 151k-token tokenizer and a 151,936-row embedding


def config(tmp_path, explorer, **kw) -> ExploreConfig:
    problems = [Problem(f"q{i}", f"What is {i} + {i}?", str(2 * i), {}) for i in range(3)]
    write_problems_jsonl(problems, tmp_path / "p.jsonl")
    base = dict(prompts=str(tmp_path / "p.jsonl"), explorer=str(explorer), bank=str(tmp_path / "bank"),
                template="{question}", samples_per_prompt=2, max_new_tokens=5, engine=EngineKind.HF,
                scoring_workers=0)
    return ExploreConfig(**{**base, **kw})


def test_bank_records_the_stop_set_and_rewards_policy(tiny_qwen3_dir, tmp_path):
    run_explore(config(tmp_path, tiny_qwen3_dir, stop_token_ids=(PLAIN,)), echo=lambda s: None)
    files = open_bank(str(tmp_path / "bank"))
    ident = files.identity
    assert ident["sampling"]["stop_token_ids"] == [PLAIN, ENDOFTEXT, IM_END]
    assert (ident["truncated_reward"], ident["logprobs"], ident["seeds"]) == ("zero", "sampling", "per-sample")
    assert verify_bank(files, 2) == []
    table = BankReader(files).read(list(range(6))).to_pydict()
    for ids, reason in zip(table["response_token_ids"], table["finish_reason"]):
        assert (reason == "stop") == (ids[-1] in (PLAIN, ENDOFTEXT, IM_END)) and len(ids) <= 5


def test_bank_verify_finds_rows_that_disagree_with_the_stop_set():
    import pyarrow as pa

    t = pa.table({"response_token_ids": [[1, 2, 7], [1, 7, 2], [3, 4], [7, 1], [], [9]],
                  "finish_reason": ["stop", "stop", "length", "length", "stop", "length"]})
    assert misplaced_stops(t, [7]) == 3  # a stop inside a "stop" row, one in a "length" row, an empty "stop" row


@pytest.mark.parametrize("policy,reward,correct", [(TruncatedReward.ZERO, 0.0, False),
                                                    (TruncatedReward.VERIFY, 1.0, True)])
def test_truncated_reward_zero_or_verify(tiny_qwen3, qwen3_tok, steer, tmp_path, policy, reward, correct):
    """An unfinished response whose last number is the gold: `zero` does not reward it."""
    body = qwen3_tok.encode("So far 2 + 2 = 4 and")
    cfg = config(tmp_path, "unused", truncated_reward=policy, max_new_tokens=len(body) + 2)
    job = Job(Problem("q2", "What is 2 + 2?", "4", {}), (0, 1))
    prompt_ids = qwen3_tok(["What is 2 + 2?"])["input_ids"]
    with steer.forced(tiny_qwen3, body + qwen3_tok.encode(" then")), ScoringPool(0) as pool:
        records = _sample_and_score(cfg, [job], ["What is 2 + 2?"], prompt_ids, HFEngine(tiny_qwen3, qwen3_tok), pool)
    assert [r.finish_reason for r in records] == ["length", "length"]
    assert records[0].response.startswith("So far 2 + 2 = 4 and")
    assert [(r.reward, r.correct, r.extracted_answer) for r in records] == [(reward, correct, "4")] * 2


def test_job_seeds_are_per_prompt_and_sample():
    a = Job(Problem("a", "q", "1", {}), (0, 1, 2))
    assert job_seeds(0, a) == job_seeds(0, Job(a.problem, (0, 1, 2)))  # a rerun or resume draws the same streams
    assert len(set(job_seeds(0, a))) == 3 and job_seeds(0, Job(a.problem, (2,))) == job_seeds(0, a)[2:]
    assert set(job_seeds(0, a)).isdisjoint(job_seeds(0, Job(Problem("b", "q", "1", {}), (0, 1, 2))))
