"""S2L-PO inside TRL: a `GRPOTrainer(rollout_func=...)` hook that fills each group from a bank.

TRL's GRPOTrainer hands its `rollout_func` the per-process slice of a generation batch,
each prompt repeated `num_generations` (= G) times in a row, and the trainer itself; it
expects one completion per entry (`prompt_ids`, `completion_ids`, `logprobs`; any other
key reaches the reward functions as a column). `S2LPORollout` answers every group with
G_w = ⌈α_i·G⌉ bank rows (`stage2_train.schedule`, the anneal of `s2lpo train`; rows drawn
by `pipeline.bank.draw`, the short-pool rule included) and G − G_w completions of the
trainer's own generation (`GRPOTrainer._generate_single_turn`: transformers' generate, or
vLLM when `use_vllm`). TRL then scores all G with its reward functions and computes the
advantages over the mixed group, as in the paper (METHOD §2). Evaluation is the learner alone.

    from stage2_train.trl_rollout import S2LPORollout
    trainer = GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(num_generations=8, ...),
                          train_dataset=data, rollout_func=S2LPORollout("data/bank", t_mix=40))

Step i (1-based) is TRL's generation batch i: one batch per `steps_per_generation ·
num_iterations` micro-steps, read off `trainer.state.global_step` (so a resumed run keeps
its place). Dataset prompts are matched to the bank by token ids: a prompt whose ids are
not a bank prompt's gets no bank rows (its group is generated online, as for a short pool).

Columns added for the reward functions: `from_bank` (bool) and `bank_reward` (the bank's
cached reward, None online). Log-probs: TRL's own (None without vLLM); with vLLM, bank rows
carry NaN, which TRL's importance-sampling correction treats as ratio 1 (the paper's
uncorrected bank rows). Tested with trl==1.16.0 (pyproject extra `trl`) without vLLM;
the vLLM path calls the same TRL generation but has not been run here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.bank.draw import draw_rows
from pipeline.errors import UserError
from stage2_train.groups import BankRows, eligible_pool
from stage2_train.rollout import step_seed
from stage2_train.schedule import Schedule, anneal_rate, bank_count

COLUMNS = ["prompt_id", "prompt_token_ids", "response_token_ids", "reward"]


@dataclass(frozen=True)
class StepRecord:
    """What one generation batch got: α, G_w and the bank rows of each local group."""

    step: int
    alpha: float
    g_w: int
    bank_per_group: tuple[int, ...]


def member_plan(offset: int, rows: int, group_size: int, drawn: dict[int, np.ndarray]) -> list[int | None]:
    """Per local row (global index offset + j): the bank position it takes, or None (online).
    Member m of group q takes `drawn[q][m]` when m < len(drawn[q])."""
    out: list[int | None] = []
    for j in range(rows):
        q, m = divmod(offset + j, group_size)
        picks = drawn.get(q, ())
        out.append(int(picks[m]) if m < len(picks) else None)
    return out


class S2LPORollout:
    """`rollout_func` for trl's GRPOTrainer: ⌈α_i·G⌉ bank rows per group, the rest online.

    `bank` is an s2lpo bank (any URI BankReader opens); `schedule`, `t_mix`, `initial_rate`,
    `floor` are `train.anneal` of params.yaml; `rows` is `train.bank_rows` (all or rewarded).
    `seed` fixes the draws (default: the trainer's `args.seed`). `history` keeps one
    `StepRecord` per training call.
    """

    def __init__(self, bank: str, *, t_mix: int, schedule: Schedule | str = Schedule.LINEAR,
                 initial_rate: float = 1.0, floor: float = 0.05, rows: BankRows | str = BankRows.ALL,
                 seed: int | None = None) -> None:
        from pipeline.bank.reader import BankReader

        self.bank = bank
        self.schedule, self.rows = _enum(Schedule, schedule, "schedule"), _enum(BankRows, rows, "rows")
        self.t_mix, self.initial_rate, self.floor, self.seed = t_mix, initial_rate, floor, seed
        anneal_rate(1, schedule=self.schedule, t_mix=t_mix, initial_rate=initial_rate, floor=floor)  # validates
        self.reader = BankReader.open(bank, columns=COLUMNS)
        self.pool = eligible_pool(self.reader.pool, self.reader.correct, self.rows)
        self._by_ids: dict[tuple[int, ...], str] | None = None
        self._checked_tokenizer = False
        self._matched_any = False
        self.history: list[StepRecord] = []

    def __call__(self, prompts: list, trainer) -> dict:
        training = trainer.model.training
        g = trainer.num_generations if training else trainer.num_generations_eval
        prompt_ids = trainer._tokenize_prompts(prompts)[0]
        if not training:
            return self._finish(trainer, prompt_ids, [None] * len(prompt_ids), {}, g)
        self._check_tokenizer(trainer)
        step = self.step_of(trainer)
        alpha = anneal_rate(step, schedule=self.schedule, t_mix=self.t_mix, initial_rate=self.initial_rate,
                            floor=self.floor)
        g_w = bank_count(alpha, g)
        offset = trainer.accelerator.process_index * len(prompts)  # TRL's own process slice
        drawn = self._draw(prompt_ids, offset, g, g_w, step, trainer.args.seed if self.seed is None else self.seed)
        plan = member_plan(offset, len(prompt_ids), g, drawn)
        table = self.reader.read([p for p in plan if p is not None]).to_pydict()
        self._check_prompts(prompt_ids, plan, table)
        groups = range(offset // g, (offset + len(prompt_ids) - 1) // g + 1)
        self.history.append(StepRecord(step, alpha, g_w, tuple(len(drawn.get(q, ())) for q in groups)))
        trainer._metrics["train"]["s2lpo/alpha"].append(alpha)
        trainer._metrics["train"]["s2lpo/bank_share"].append(sum(p is not None for p in plan) / len(plan))
        return self._finish(trainer, prompt_ids, plan, table, g)

    @staticmethod
    def step_of(trainer) -> int:
        """The 1-based s2lpo step of the generation batch TRL is about to make."""
        micro = trainer.state.global_step * trainer.args.gradient_accumulation_steps
        return micro // (trainer.args.steps_per_generation * trainer.num_iterations) + 1

    def _draw(self, prompt_ids, offset: int, g: int, g_w: int, step: int, seed: int) -> dict[int, np.ndarray]:
        """Bank positions per global group index; each group's draw has its own rng, so every
        process holding part of a group draws the same rows."""
        if g_w == 0:
            return {}
        by_ids = self._prompt_index()
        drawn = {}
        for j in range(len(prompt_ids)):
            q = (offset + j) // g
            if q in drawn:
                continue
            pid = by_ids.get(tuple(prompt_ids[j]))
            rng = np.random.default_rng(step_seed(seed, step, f"trl-bank:{q}"))
            drawn[q] = draw_rows(self.pool, [(pid, g_w)], rng).rows[0] if pid is not None else np.empty(0, np.int64)
        if not self._matched_any and all(len(r) == 0 for r in drawn.values()):
            raise UserError(f"{self.bank}: holds none of this batch's {len(drawn)} prompts (matched by token ids); "
                            "the dataset's `prompt` must be the bank's rendered prompt (bank.json template)")
        self._matched_any = True
        return drawn

    def _prompt_index(self) -> dict[tuple[int, ...], str]:
        """Bank prompt token ids → prompt id (one row read per prompt, once)."""
        if self._by_ids is None:
            firsts = [int(pos[0]) for pos in self.reader.pool.values()]
            t = self.reader.read(firsts).to_pydict()
            self._by_ids = {tuple(ids): pid for ids, pid in zip(t["prompt_token_ids"], t["prompt_id"])}
        return self._by_ids

    def _check_tokenizer(self, trainer) -> None:
        from pipeline.models import tokenizer_fingerprint

        if self._checked_tokenizer:
            return
        theirs, mine = self.reader.files.identity.get("tokenizer"), tokenizer_fingerprint(trainer.processing_class)
        if theirs != mine:
            raise UserError(f"{self.bank}: filled by an explorer whose tokenizer ({theirs}) differs from the "
                            f"trainer's processing_class ({mine}); use a learner of the explorer's family")
        self._checked_tokenizer = True

    @staticmethod
    def _check_prompts(prompt_ids, plan, table) -> None:
        k = 0
        for ids, pos in zip(prompt_ids, plan):
            if pos is not None:
                if list(table["prompt_token_ids"][k]) != list(ids):
                    raise RuntimeError(f"bank row {pos} belongs to another prompt")
                k += 1

    def _finish(self, trainer, prompt_ids, plan, table, g: int) -> dict:
        """Generate the online members with the trainer's own generation and merge in row order."""
        online = [j for j, p in enumerate(plan) if p is None]
        completions, logprobs = _generate(trainer, [prompt_ids[j] for j in online], g)
        out_ids: list[list[int]] = [[] for _ in plan]
        out_lp: list[list[float]] | None = None if logprobs is None else [[] for _ in plan]
        from_bank, bank_reward = [p is not None for p in plan], [None] * len(plan)
        for j, c, lp in zip(online, completions, logprobs or [None] * len(online)):
            out_ids[j] = list(c)
            if out_lp is not None:
                out_lp[j] = list(lp)
        k = 0
        for j, p in enumerate(plan):
            if p is not None:
                out_ids[j] = list(table["response_token_ids"][k])
                bank_reward[j] = float(table["reward"][k])
                if out_lp is not None:
                    out_lp[j] = [float("nan")] * len(out_ids[j])  # TRL: NaN → importance ratio 1
                k += 1
        return {"prompt_ids": [list(x) for x in prompt_ids], "completion_ids": out_ids, "logprobs": out_lp,
                "from_bank": from_bank, "bank_reward": bank_reward}


def _generate(trainer, prompt_ids: Sequence[Sequence[int]], g: int):
    """The trainer's own single-turn generation for these rows (one completion each)."""
    if not prompt_ids:
        return [], None
    if trainer.use_vllm:  # vLLM takes every g-th prompt and samples g: ask for one at a time, g = 1
        return trainer._generate_single_turn(list(prompt_ids), None, {}, 1)
    return trainer._generate_single_turn(list(prompt_ids), None, {}, g)


def _enum(kind, value, name: str):
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"S2LPORollout({name}={value!r}): choose one of {[v.value for v in kind]}") from None
