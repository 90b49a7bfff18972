"""S2L-PO from TRL: `S2LPORollout` as the `rollout_func` of TRL's real GRPOTrainer.

Marked `trl`. Skipped where trl is not installed (the main .venv), except under
S2LPO_REQUIRE_TRL=1: `make test` (so CI) runs `pytest -m trl` in .venv-bench (the package
with its `trl` extra, trl==1.16.0) with it set, where a missing trl fails the run.
"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

from stage2_train.schedule import Schedule, anneal_rate, bank_count
from stage2_train.trl_rollout import member_plan

G, PROMPTS, STEPS, T_MIX = 4, 3, 4, 4  # α = 1, 2/3, 1/3, 0 → G_w = 4, 3, 2, 0


def test_member_plan_splits_groups_by_global_index():
    drawn = {0: np.array([10, 11]), 1: np.array([20, 21, 22]), 2: np.array([30])}
    # a process holding rows 2..9 of a batch of groups of 4: the end of group 0, group 1, the start of group 2
    assert member_plan(2, 8, 4, drawn) == [None, None, 20, 21, 22, None, 30, None]
    assert member_plan(0, 4, 4, {}) == [None] * 4


def test_step_of_counts_generation_batches():
    from stage2_train.trl_rollout import S2LPORollout

    def trainer(global_step, accum, per_gen, iters):
        return types.SimpleNamespace(state=types.SimpleNamespace(global_step=global_step), num_iterations=iters,
                                     args=types.SimpleNamespace(gradient_accumulation_steps=accum,
                                                                steps_per_generation=per_gen))

    assert [S2LPORollout.step_of(trainer(s, 1, 2, 1)) for s in (0, 2, 4)] == [1, 2, 3]
    assert [S2LPORollout.step_of(trainer(s, 2, 2, 1)) for s in (0, 1, 2)] == [1, 2, 3]
    assert S2LPORollout.step_of(trainer(4, 1, 1, 2)) == 3


@pytest.fixture(scope="module")
def trl():
    if os.environ.get("S2LPO_REQUIRE_TRL") == "1":
        import trl  # an ImportError here fails the run instead of skipping
    else:
        trl = pytest.importorskip("trl")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    return trl


def _trainer(trl, world, out, rollout, rewards, *, prompt_suffix="="):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.data import load_problems
    from pipeline.verifier import score_response

    problems = load_problems(str(world / "train.jsonl"))[: PROMPTS * STEPS]
    data = Dataset.from_list([{"prompt": p.question + prompt_suffix, "answer": p.answer} for p in problems])

    def reward(prompts, completions, completion_ids, answer, from_bank, **_):
        scores = [score_response(c, a).reward for c, a in zip(completions, answer)]
        rewards.append({"prompts": list(prompts), "completion_ids": [list(c) for c in completion_ids],
                        "from_bank": list(from_bank), "rewards": scores})
        return scores

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(world / "learner"), dtype=torch.float32)
    args = trl.GRPOConfig(
        # two optimizer steps of 6 responses per generation batch of 3 prompts × G: step i = TRL generation batch i
        output_dir=str(out), max_steps=2 * STEPS, per_device_train_batch_size=PROMPTS * G // 2, steps_per_generation=2,
        per_device_eval_batch_size=PROMPTS * G, num_generations=G, max_completion_length=16, temperature=1.0, learning_rate=1e-3, beta=0.0,
        lr_scheduler_type="constant", use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, dataloader_num_workers=0, log_completions=False)
    return trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, eval_dataset=data,
                           processing_class=AutoTokenizer.from_pretrained(str(world / "learner")),
                           rollout_func=rollout)


@pytest.mark.trl
@pytest.mark.slow
def test_grpo_trainer_mixes_bank_rows_on_the_schedule(trl, train_world, tmp_path):
    import torch
    from transformers import TrainerCallback

    from pipeline.bank.reader import BankReader
    from stage2_train.trl_rollout import S2LPORollout

    reader = BankReader.open(str(train_world / "bank"))
    bank = reader.read(np.arange(reader.files.rows))
    responses = {}  # rendered prompt → the bank's responses to it (token ids)
    for prompt, ids in zip(bank.column("prompt").to_pylist(), bank.column("response_token_ids").to_pylist()):
        responses.setdefault(prompt, []).append(list(ids))
    rewards, advantages = [], []
    rollout = S2LPORollout(str(train_world / "bank"), t_mix=T_MIX, schedule="linear")
    trainer = _trainer(trl, train_world, tmp_path / "trl", rollout, rewards)

    class Advantages(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            advantages.append(list(trainer._logs["advantages"]))

    trainer.add_callback(Advantages())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()

    assert [r.step for r in rollout.history] == [1, 2, 3, 4]
    assert len(rewards) == STEPS and len(advantages) == 2 * STEPS
    for step, (call, adv) in enumerate(zip(rewards, advantages[::2]), start=1):  # the batch's first update
        g_w = bank_count(anneal_rate(step, schedule=Schedule.LINEAR, t_mix=T_MIX), G)
        assert len(call["prompts"]) == PROMPTS * G
        for q in range(PROMPTS):
            rows = range(q * G, (q + 1) * G)
            assert len({call["prompts"][j] for j in rows}) == 1  # a group is one prompt
            # bank rows recognised by their tokens, independently of the hook's own `from_bank` column
            in_bank = [call["completion_ids"][j] in responses[call["prompts"][j]] for j in rows]
            assert sum(in_bank) == g_w, (step, q, in_bank)
            assert [call["from_bank"][j] for j in rows] == in_bank
            # TRL's advantages are over the mixed group: (r − mean) / (std + 1e-4), std with Bessel's correction
            r = np.array([call["rewards"][j] for j in rows])
            assert np.allclose([adv[j] for j in rows], (r - r.mean()) / (r.std(ddof=1) + 1e-4), atol=1e-5)
        assert rollout.history[step - 1].bank_per_group == (g_w,) * PROMPTS
    shares = [r["s2lpo/bank_share"] for r in trainer.state.log_history if "s2lpo/bank_share" in r]
    assert shares == pytest.approx([1.0, 0.75, 0.5, 0.0])
    moved = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # TRL trained on the mixed groups
    seen = len(rewards)
    trainer.evaluate()  # evaluation is the learner alone
    assert len(rewards) > seen and not any(b for call in rewards[seen:] for b in call["from_bank"])
    assert len(rollout.history) == STEPS
    print("\nstep  alpha  G_w/G  bank share (TRL log)")
    for rec, share in zip(rollout.history, shares):
        print(f"{rec.step:>4}  {rec.alpha:.3f}  {rec.g_w}/{G}    {share:.2f}")


@pytest.mark.trl
@pytest.mark.slow
def test_prompts_not_in_the_bank_are_a_user_error(trl, train_world, tmp_path):
    from pipeline.errors import UserError
    from stage2_train.trl_rollout import S2LPORollout

    rollout = S2LPORollout(str(train_world / "bank"), t_mix=T_MIX)
    trainer = _trainer(trl, train_world, tmp_path / "trl", rollout, [], prompt_suffix=" =")
    with pytest.raises(UserError, match="holds none of this batch's 3 prompts"):
        trainer.train()


def test_unknown_schedule_is_a_user_error(train_world):
    from pipeline.errors import UserError
    from stage2_train.trl_rollout import S2LPORollout

    with pytest.raises(UserError, match=r"S2LPORollout\(schedule='cosin'\): choose one of"):
        S2LPORollout(str(train_world / "bank"), t_mix=4, schedule="cosin")
