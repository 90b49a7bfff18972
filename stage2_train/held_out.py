"""Periodic held-out evaluation during training: pass@1 and pass@k by subset.

Not `s2lpo evaluate` (pipeline.evaluate, a finished model on benchmark files): this runs
inside `s2lpo train` on the learner's own rollout engine, every `eval.every` steps.
Both count correct samples and tabulate pass@k with `pipeline.sample_score`, and resolve
their sampling preset the same way (pipeline.config_blocks.PresetSampling).

Subsets come from the problems' `meta.flawed` flag when present (the testbed's planted
flaw): `all`, `flawed` and `rest`. The sampling seed is the same at every evaluation and
in every run with the same seed, so curves of different methods share their noise.
Under torchrun each generation group samples its block of the problems and the counts
are gathered, so every rank reports the same numbers.
"""

from __future__ import annotations

import numpy as np

from pipeline.data import load_problems
from pipeline.sample_score import correct_counts, passk_by_subset, powers_of_two
from stage2_train.rollout import step_seed


class Evaluator:
    """The held-out problems of `cfg.eval`, their subsets, and their pass@k at a step."""

    def __init__(self, cfg, run) -> None:
        self.cfg, self.run = cfg, run
        ev = cfg.eval
        self.problems = [] if not ev.problems or ev.every < 0 else load_problems(ev.problems, limit=ev.limit)
        flawed = np.array([bool(p.meta.get("flawed", False)) for p in self.problems], dtype=bool)
        self.subsets = {"all": np.ones(len(self.problems), dtype=bool)}
        if flawed.any():
            self.subsets.update(flawed=flawed, rest=~flawed)

    def evaluate(self, step: int) -> dict:
        if not self.problems:
            return {}
        ev = self.cfg.eval
        params = ev.sampling(seed=step_seed(self.cfg.seed, 0, "eval"))
        d = self.run.dist
        block = d.rollout_range(len(self.problems))
        mine = self.problems[block.start : block.stop]
        counts = correct_counts(self.run.engine, self.run.tokenizer, mine, params, template=self.cfg.template,
                                scorer=self.run.scorer) if mine else np.zeros(0, dtype=np.int64)
        if d.active:  # one block per generation group, in problem order
            counts = np.concatenate([c for rank, c in enumerate(d.gather(counts)) if rank % d.tp == 0])
        table = passk_by_subset(counts, ev.samples, self.subsets, powers_of_two(ev.samples))
        out = {}
        for subset, by_k in table.items():
            prefix = "eval/" if subset == "all" else f"eval/{subset}/"
            out.update({f"{prefix}pass@{k}": float(v) for k, v in by_k.items()})
        return out
