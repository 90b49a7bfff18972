"""Stage 2 reads the bank's stored prompt ids and refuses rows tokenised otherwise; prompts
rendered by a chat template that writes its own BOS get it once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.errors import UserError
from stage2_train.setup_run import setup
from stage2_train.trainer import run_train

pytestmark = pytest.mark.slow

BOS_CHAT = ("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


def _quiet(cfg):
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, every=0, problems=None))


def _run(cfg):
    return run_train(cfg, echo=lambda *_: None, progress=False)


def test_a_bank_tokenised_with_a_double_bos_is_refused_before_the_run_writes(train_config, train_world,
                                                                            char_tokenizer, tmp_path):
    from pipeline.data import load_problems

    from .conftest import write_bank

    problems = load_problems(str(train_world / "train.jsonl"))
    write_bank(tmp_path / "double", problems, char_tokenizer, edit_prompt_ids=lambda p, ids: [ids[0]] + ids)
    cfg = _quiet(train_config(bank=str(tmp_path / "double"), out_dir=str(tmp_path / "run")))
    with pytest.raises(UserError) as info:
        _run(cfg)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'double'}: row 0 (prompt p000) stores ")
    assert "first difference at token 1" in message and "re-run `s2lpo explore`" in message
    assert not Path(cfg.out_dir).exists()


def test_a_drawn_row_with_other_prompt_ids_stops_the_step(train_config, train_world, char_tokenizer, tmp_path):
    from pipeline.data import load_problems

    from .conftest import write_bank

    problems = load_problems(str(train_world / "train.jsonl"))
    # the first prompt's rows (the one setup checks) are right; every other prompt's rows lost their last id
    write_bank(tmp_path / "edited", problems, char_tokenizer,
               edit_prompt_ids=lambda p, ids: ids if p.id == "p000" else ids[:-1])
    cfg = _quiet(train_config(bank=str(tmp_path / "edited"), steps=1))
    with pytest.raises(UserError, match=r"^\S+edited: row \d+ \(prompt p0\d\d\) stores \d+ prompt token ids, the "
                                        r"learner encodes \d+, first difference at token \d+ .*tokenised differently"):
        _run(cfg)


def test_a_chat_template_that_writes_the_bos_gets_it_once(train_world, tmp_path):
    """Llama-style: the tokenizer adds a BOS itself and the chat template writes one too."""
    from transformers import AutoTokenizer

    from stage2_train.config import TrainConfig

    learner = tmp_path / "learner"
    tok = AutoTokenizer.from_pretrained(train_world / "learner")
    tok.chat_template = BOS_CHAT
    tok.save_pretrained(learner)
    for f in ("config.json", "model.safetensors"):
        (learner / f).write_bytes((train_world / "learner" / f).read_bytes())
    cfg = _quiet(TrainConfig(prompts=str(train_world / "train.jsonl"), learner=str(learner), bank=None,
                             template="chat", out_dir=str(tmp_path / "run"), steps=1, prompts_per_step=2,
                             group_size=2, max_new_tokens=4))
    run = setup(cfg, echo=lambda *_: None)
    bos = tok.bos_token_id
    assert tok("x", add_special_tokens=True)["input_ids"][0] == bos  # the tokenizer adds one
    first = run.rollouts.prompt_ids[0]
    assert first[0] == bos and first[1] != bos
    assert all(ids.count(bos) == 1 for ids in run.rollouts.prompt_ids)
    assert first == tok(tok.apply_chat_template([{"role": "user", "content": run.rollouts.problems[0].question}],
                                                tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)["input_ids"]


def test_the_bank_is_the_templates_home(train_config, train_world, char_tokenizer, tmp_path):
    """train.template unset: the run renders with the template bank.json records (prompts,
    bank rows and in-training evaluation alike); another template set by hand is refused."""
    from pipeline.data import load_problems
    from pipeline.prompts import encode_prompts
    from stage2_train.metrics import read_jsonl

    from .conftest import write_bank

    problems = load_problems(str(train_world / "train.jsonl"))
    write_bank(tmp_path / "q", problems, char_tokenizer, template="Q: {question}=")
    cfg = train_config(bank=str(tmp_path / "q"), template=None, steps=1, out_dir=str(tmp_path / "run"))
    run = setup(cfg, echo=lambda *_: None)
    assert run.cfg.template == "Q: {question}="
    assert run.rollouts.prompt_ids == encode_prompts(char_tokenizer, [f"Q: {p.question}=" for p in problems],
                                                     template="Q: {question}=")
    run.rollouts.reader.close()
    _run(cfg)  # rows drawn, checked against the learner's ids, and the held-out set evaluated with the bank's
    assert "eval/pass@1" in read_jsonl(tmp_path / "run/metrics.jsonl")[-1]
    with pytest.raises(UserError, match=r"^\S+q: prompts rendered with template 'Q: \{question\}=', but "
                                        r"train.template is 'A: \{question\}='; leave train.template unset"):
        setup(train_config(bank=str(tmp_path / "q"), template="A: {question}="), echo=lambda *_: None)


def test_a_run_that_draws_no_bank_rows_still_renders_with_its_banks_template(train_config, train_world,
                                                                            char_tokenizer, tmp_path):
    """A GRPO baseline (α = 0) pointed at the S2L-PO arm's bank renders its prompts with that
    bank's template, so both arms see the same prompts; with bank: null the unset template
    is '{question}='."""
    from pipeline.data import load_problems
    from stage2_train.config import AnnealConfig
    from stage2_train.schedule import Schedule

    from .conftest import write_bank

    problems = load_problems(str(train_world / "train.jsonl"))
    write_bank(tmp_path / "q", problems, char_tokenizer, template="Q: {question}=")
    grpo = AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.0)
    run = setup(train_config(bank=str(tmp_path / "q"), template=None, anneal=grpo), echo=lambda *_: None)
    assert run.cfg.template == "Q: {question}=" and run.rollouts.reader is None  # the rows are never opened
    assert setup(train_config(bank=None, template=None), echo=lambda *_: None).cfg.template == "{question}="
