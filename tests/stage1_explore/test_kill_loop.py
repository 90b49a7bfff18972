"""kill -9 of `explore` at many random moments, resuming each time.

The explorer runs in real processes forked from a server that has already imported torch,
transformers and the verifier (multiprocessing's forkserver, on one torch thread), so a
round costs the run itself and not the imports. Each round SIGKILLs the run at a moment drawn uniformly over an
uninterrupted run's duration: while it loads the model, while it generates, while the
writer thread encodes a shard or replaces the manifest. After every kill the bank must
pass `verify_bank` (readable shards, manifests that match them, no duplicate
(prompt, sample) pair); a round that finishes before its kill must hold exactly M rows per
prompt. A full bank starts a fresh one, so kills keep landing in every phase.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest

from pipeline.bank.inspect import verify_bank
from pipeline.bank.reader import BankReader
from pipeline.bank.store import open_bank
from stage1_explore.config import EngineKind, ExploreConfig
from stage1_explore.explore import run_explore

KILLS = 20
PROMPTS, M = 8, 2
# what a run would otherwise import on first use (pyarrow imports pandas for its first pa.array)
PRELOAD = ["torch", "transformers", "transformers.models.qwen3.modeling_qwen3", "transformers.generation.utils",
           "math_verify", "sympy", "tqdm", "pandas", "pyarrow.parquet", "stage1_explore.explore",
           "pipeline.engines.hf", "pipeline.models", "pipeline.verifier", "pipeline.scoring_pool", "pipeline.prompts",
           "pipeline.bank.background"]


def _config(family, bank) -> ExploreConfig:
    return ExploreConfig(prompts=str(family / "train.jsonl"), explorer=str(family / "explorer"), bank=str(bank),
                         limit=PROMPTS, samples_per_prompt=M, max_new_tokens=8, prompts_per_shard=1,
                         engine=EngineKind.HF, scoring_workers=0)


def _rows(bank) -> int:
    return open_bank(str(bank)).rows if (bank / "bank.json").exists() else 0


def _assert_complete(bank) -> None:
    reader = BankReader.open(str(bank))
    assert verify_bank(reader.files, M) == [] and reader.files.rows == PROMPTS * M
    assert set(reader.counts().values()) == {M} and len(reader.counts()) == PROMPTS


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_keeps_every_bank_sound(tiny_family, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by torch when the server imports it
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)

    def start(bank):
        proc = ctx.Process(target=run_explore, args=(_config(tiny_family, bank),), kwargs={"echo": print})
        proc.start()
        return proc

    warm = ctx.Process(target=os.getpid)  # starts the server: its imports are not a run's
    warm.start()
    warm.join(600)
    t0 = time.perf_counter()  # one uninterrupted run sets the horizon of the kill moments
    first = start(tmp_path / "bank-0")
    first.join(600)
    horizon = time.perf_counter() - t0
    assert first.exitcode == 0
    _assert_complete(tmp_path / "bank-0")

    rng = random.Random(7)
    banks, kills, partial, finished = 1, [], set(), 0
    bank = tmp_path / f"bank-{banks}"
    for _ in range(6 * KILLS):  # a bound, not a target: the loop stops after KILLS kills
        if len(kills) == KILLS:
            break
        before, delay = _rows(bank), rng.uniform(0.0, horizon)
        proc = start(bank)
        proc.join(delay)
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)  # (a run that ends right now exits 0 all the same)
            proc.join(30)
        assert proc.exitcode in (0, -signal.SIGKILL)
        if proc.exitcode == -signal.SIGKILL:
            kills.append((bank.name, round(delay, 3), before, _rows(bank)))
        else:
            finished += 1
        if (bank / "bank.json").exists():
            files = open_bank(str(bank))
            assert verify_bank(files) == [], kills[-1:]  # sound after every kill: no torn shard, no duplicate
            assert before <= files.rows <= PROMPTS * M
            if 0 < files.rows < PROMPTS * M:
                partial.add(files.rows)
        if proc.exitcode == 0:
            _assert_complete(bank)  # a run that got to its end left exactly M rows per prompt
            banks += 1
            bank = tmp_path / f"bank-{banks}"
    assert len(kills) == KILLS, (horizon, finished, kills)
    assert partial, (horizon, kills)  # some kills landed mid-run, between shards or during one
    for i in range(1, banks + 1):  # resume every bank the loop touched to its end
        if (tmp_path / f"bank-{i}").exists():
            run_explore(_config(tiny_family, tmp_path / f"bank-{i}"), echo=lambda *_: None)
            _assert_complete(tmp_path / f"bank-{i}")
