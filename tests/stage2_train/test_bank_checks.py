"""Stage 2's side of truncated_reward, the stop set and the log-prob convention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.engines.base import Completion
from pipeline.errors import UserError
from pipeline.rewards import TruncatedReward
from pipeline.verifier import score_response
from stage2_train.rl_math import BankCorrection
from stage2_train.rollout import bank_responses, online_responses


def scorer(texts, golds):
    return [score_response(t, g) for t, g in zip(texts, golds)]


@pytest.mark.parametrize("policy,rewards", [(TruncatedReward.ZERO, [0.0, 1.0]), (TruncatedReward.VERIFY, [1.0, 1.0])])
def test_online_truncated_reward(policy, rewards):
    unfinished = Completion((1, 2), "12+34=46,46+5=51 so far", (-0.1, -0.2), "length")
    finished = Completion((1, 2, 3), "12+34=46,46+5=51\\boxed{51}", (-0.1, -0.2, -0.3), "stop")
    (group,) = online_responses([[unfinished, finished]], [[9]], ["51"], scorer, truncated_reward=policy)
    assert [r.reward for r in group] == rewards and [r.truncated for r in group] == [True, False]
    assert [r.correct for r in group] == [bool(x) for x in rewards]


def _bank(path, tokenizer, *, truncated_reward: str):
    from pipeline.bank.reader import BankReader
    from pipeline.bank.schema import BankRecord, records_to_table
    from pipeline.bank.store import BankWriter

    rows = [("so far 51", "length"), ("\\boxed{51}", "stop")]
    writer = BankWriter(str(path), {"test": "truncated", "truncated_reward": truncated_reward})
    records = [BankRecord("p", s, "q=", [1], text, [5, 6], [-0.5, -0.5], 1.0 if truncated_reward == "verify" or
                          reason == "stop" else 0.0, True, "51", reason, 2) for s, (text, reason) in enumerate(rows)]
    writer.write_shard(records_to_table(records))
    return BankReader.open(str(path))


@pytest.mark.parametrize("policy,bank,rescore,rewards", [
    (TruncatedReward.ZERO, "verify", False, [0.0, 1.0]),  # a verify bank's truncated row is zeroed
    (TruncatedReward.VERIFY, "verify", False, [1.0, 1.0]),
    (TruncatedReward.VERIFY, "zero", True, [1.0, 1.0]),  # a zero bank is re-scored to verify it
])
def test_bank_rows_follow_the_runs_truncated_reward(tmp_path, char_tokenizer, policy, bank, rescore, rewards):
    reader = _bank(tmp_path / "bank", char_tokenizer, truncated_reward=bank)
    (group,) = bank_responses(reader, [np.array([0, 1])], [[1]], ["51"], names=["p"], rescore=scorer if rescore else None,
                              truncated_reward=policy)
    assert [r.reward for r in group] == rewards and [r.truncated for r in group] == [True, False]


def test_training_sees_the_banks_logprobs_and_stop_set(train_config, train_world, char_tokenizer, tmp_path):
    from pipeline.data import load_problems
    from stage2_train.setup_run import open_training_bank

    from .conftest import write_bank

    problems = load_problems(str(train_world / "train.jsonl"))
    eos = char_tokenizer.eos_token_id
    write_bank(tmp_path / "old", problems, char_tokenizer, identity_changes={"logprobs": None, "sampling": {}})
    tis = dataclasses.replace(train_config(bank=str(tmp_path / "old")).loss, bank_correction=BankCorrection.TRUNCATED_IS)
    lines = []
    with pytest.raises(UserError, match="raw distribution.*truncated IS divides by"):
        open_training_bank(train_config(bank=str(tmp_path / "old"), loss=tis), char_tokenizer, problems)
    open_training_bank(train_config(bank=str(tmp_path / "old")), char_tokenizer, problems, echo=lines.append)
    assert lines == [f"warning: {tmp_path / 'old'} does not record its stop tokens (made before s2lpo recorded "
                     f"them); the learner stops on [{eos}]"]
    write_bank(tmp_path / "other", problems, char_tokenizer, identity_changes={"sampling": {"stop_token_ids": [0, eos]}})
    lines.clear()
    bank = open_training_bank(train_config(bank=str(tmp_path / "other"), truncated_reward=TruncatedReward.VERIFY),
                              char_tokenizer, problems, echo=lines.append)
    assert lines[0].startswith(f"warning: the bank's responses were cut at stop tokens [0, {eos}], the learner's "
                               f"are [{eos}]")
    assert "re-scoring drawn rows" in lines[1] and bank.rescore  # a zero bank, a verify run
    bank = open_training_bank(train_config(), char_tokenizer, problems, echo=lines.append)
    assert not bank.rescore  # the world's bank: same stop set, same policy (zero)


def test_zero_keeps_a_non_finite_reward_so_a_broken_verifier_still_stops_the_run():
    nan_scorer = lambda texts, golds: [dataclasses.replace(s, reward=float("nan")) for s in scorer(texts, golds)]  # noqa: E731
    unfinished = Completion((1, 2), "so far 51", (-0.1, -0.2), "length")
    (group,) = online_responses([[unfinished]], [[9]], ["51"], nan_scorer, truncated_reward=TruncatedReward.ZERO)
    assert np.isnan(group[0].reward)
