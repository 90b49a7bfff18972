"""A tiny stage-2 world: a random 1-layer learner, 24 testbed prompts, a held-out split
with flawed problems, and a hand-written bank whose rows are half right and half wrong
(so mixed groups always carry reward variance, whatever the random learner says)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

TEMPLATE = "{question}="


def write_bank(path, problems, tokenizer, *, per_prompt: int = 4, tokenizer_fp: str | None = None,
               right=lambda prompt, sample: sample % 2 == 0, identity_changes: dict | None = None,
               edit_prompt_ids=None, template: str = TEMPLATE) -> None:
    """`right(i, s)`: whether sample s of the i-th prompt is correct (default: every other one);
    `edit_prompt_ids(problem, ids)`, if given, replaces the prompt ids the bank stores;
    `template`: what the explorer rendered the prompts with (bank.json records it)."""
    from pipeline.bank.schema import BankRecord, records_to_table
    from pipeline.bank.store import BankWriter
    from pipeline.models import tokenizer_fingerprint
    from pipeline.prompts import encode_prompts, template_fingerprint
    from pipeline.testbed import task
    from pipeline.verifier import VERIFIER_NAME, VERIFIER_VERSION

    identity = {"schema_version": 1, "tokenizer": tokenizer_fp or tokenizer_fingerprint(tokenizer),
                "template": {"text": template, "fingerprint": template_fingerprint(tokenizer, template)},
                "verifier": {"name": VERIFIER_NAME, "version": VERIFIER_VERSION}, "test": "hand-written",
                "sampling": {"stop_token_ids": [tokenizer.eos_token_id]}, "logprobs": "sampling",
                "truncated_reward": "zero", **(identity_changes or {})}
    writer = BankWriter(str(path), identity)
    records = []
    for i, p in enumerate(problems):
        nums = tuple(int(x) for x in p.question.split("+"))
        prompt = template.format(question=p.question)
        prompt_ids = encode_prompts(tokenizer, [prompt], template=template)[0]
        if edit_prompt_ids is not None:
            prompt_ids = edit_prompt_ids(p, prompt_ids)
        for s in range(per_prompt):
            ok = right(i, s)
            text = task.solution(nums, s, offset=0 if ok else 10)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            records.append(BankRecord(p.id, s, prompt, prompt_ids, text, ids, [-0.5] * len(ids), float(ok), ok,
                                      p.answer if ok else None, "stop", len(ids)))
    writer.write_shard(records_to_table(records))


def build_train_world(root, tokenizer):
    """The tiny world under `root` (learner/, train.jsonl, test.jsonl, bank/); also what
    benchmarks/stage2_digests.py trains on."""
    from pipeline.data import Problem, write_problems_jsonl
    from pipeline.testbed import task
    from pipeline.testbed.model import ModelShape, build_model

    model = build_model(ModelShape(layers=1, hidden=64), tokenizer, seed=3)
    model.save_pretrained(root / "learner")
    tokenizer.save_pretrained(root / "learner")
    rng = np.random.default_rng(0)
    spec = task.TaskSpec()
    train = [Problem(f"p{i:03d}", task.question(tuple(n)), task.answer(tuple(n)), {})
             for i, n in enumerate(task.sample_numbers(rng, 24, spec))]
    write_problems_jsonl(train, root / "train.jsonl")
    test = [Problem(f"t{i:03d}", task.question(tuple(n)), task.answer(tuple(n)), {"flawed": bool(task.is_flawed(tuple(int(x) for x in n), spec))})
            for i, n in enumerate(np.concatenate([task.sample_numbers(rng, 6, spec), task.sample_flawed_numbers(rng, 2, spec)]))]
    write_problems_jsonl(test, root / "test.jsonl")
    write_bank(root / "bank", train, tokenizer)
    return root


@pytest.fixture(scope="session")
def train_world(tmp_path_factory, char_tokenizer):
    return build_train_world(tmp_path_factory.mktemp("train_world"), char_tokenizer)


def tiny_config(world, out_dir, **changes):
    """A fast config on the tiny world: 6 prompts × G=4, 16 new tokens, linear anneal over 3 steps."""
    from stage2_train.config import AnnealConfig, EvalSettings, TrainConfig

    base = TrainConfig(prompts=str(world / "train.jsonl"), learner=str(world / "learner"), bank=str(world / "bank"),
                       out_dir=str(out_dir), steps=4, prompts_per_step=6, group_size=4, max_new_tokens=16,
                       mini_batch_size=12, micro_batch_size=8, lr=1e-3, anneal=AnnealConfig(t_mix=3),
                       checkpoint_every=2, tensorboard=True,
                       eval=EvalSettings(every=2, problems=str(world / "test.jsonl"), samples=2, max_new_tokens=16))
    return dataclasses.replace(base, **changes)


@pytest.fixture
def train_config(train_world, tmp_path):
    """`tiny_config` on the session's tiny world, writing under this test's tmp_path."""

    def make(**changes):
        return tiny_config(train_world, changes.pop("out_dir", tmp_path / "run"), **changes)

    return make
