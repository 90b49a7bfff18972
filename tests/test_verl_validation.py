"""A verl / LUFFY-style validation parquet holding two benchmarks in one file (a
`data_source` column, chat-list `prompt`, `extra_info.index` restarting at 0 for each
source) goes through explore, train and evaluate on the tiny testbed models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.passk import mean_pass_at_k

runner = CliRunner()
SYSTEM = "Add exactly."


@pytest.fixture(scope="module")
def two_source_parquet(tmp_path_factory):
    """Six testbed problems, three from `easy` and three from `hard` (with a system message),
    indexes 0, 1, 2 in both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.testbed import task

    nums = task.sample_numbers(np.random.default_rng(4), 6, task.TaskSpec())
    rows = [{"data_source": "easy" if i < 3 else "hard",
             "prompt": [{"role": "system", "content": SYSTEM}] * (i >= 3) + [{"role": "user", "content": task.question(tuple(n))}],
             "reward_model": {"ground_truth": task.answer(tuple(n)), "style": "rule"},
             "extra_info": {"index": i % 3, "split": "test"}}
            for i, n in enumerate(nums)]
    path = tmp_path_factory.mktemp("verl") / "valid.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_explore_then_train_on_a_two_source_verl_file(tiny_family, two_source_parquet, tmp_path):
    from pipeline.bank.reader import BankReader
    from stage1_explore.config import EngineKind, ExploreConfig
    from stage1_explore.explore import run_explore
    from stage2_train.config import AnnealConfig, EvalSettings, TrainConfig
    from stage2_train.metrics import read_jsonl
    from stage2_train.trainer import run_train

    bank = tmp_path / "bank"
    explore = ExploreConfig(prompts=str(two_source_parquet), explorer=str(tiny_family / "explorer"), bank=str(bank),
                            samples_per_prompt=2, max_new_tokens=8, engine=EngineKind.HF, scoring_workers=0)
    assert run_explore(explore, echo=lambda s: None)["generated"] == 12
    reader = BankReader.open(str(bank))
    assert sorted(reader.counts()) == ["easy/0", "easy/1", "easy/2", "hard/0", "hard/1", "hard/2"]
    hard, easy = (reader.read(reader.pool[pid]).to_pylist()[0]["prompt"] for pid in ("hard/0", "easy/0"))
    assert hard.startswith(f"{SYSTEM}\n\n") and hard.endswith("=") and "\n" not in easy  # the system preamble
    train = TrainConfig(prompts=str(two_source_parquet), learner=str(tiny_family / "explorer"), bank=str(bank),
                        out_dir=str(tmp_path / "run"), steps=1, prompts_per_step=6, group_size=2, max_new_tokens=8,
                        mini_batch_size=12, micro_batch_size=12, anneal=AnnealConfig(t_mix=2),
                        eval=EvalSettings(every=-1), checkpoint_every=1)
    run_train(train, echo=lambda *_: None, progress=False)
    (step,) = read_jsonl(tmp_path / "run" / "metrics.jsonl")[1:]
    assert step["bank/responses"] == 6 * 2  # α = 1 at step 0: every group drawn from the bank, ids matched


def test_evaluate_reports_pass_at_k_per_data_source(tiny_family, two_source_parquet, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    sets = ["samples=4", "max_new_tokens=12", "scoring_workers=0", "threads=1", f"out_dir={tmp_path / 'out'}",
            f"model={tiny_family / 'explorer'}", f"benchmarks={{valid: {two_source_parquet}}}"]
    result = runner.invoke(app, ["evaluate", "--no-progress", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out" / "results.parquet").to_pydict()
    assert table["problem_id"] == ["easy/0", "easy/1", "easy/2", "hard/0", "hard/1", "hard/2"]
    assert table["data_source"] == ["easy"] * 3 + ["hard"] * 3
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["valid"]
    assert list(metrics) == ["all", "data_source=easy", "data_source=hard", "stats"]
    for subset, rows in (("all", range(6)), ("data_source=easy", range(3)), ("data_source=hard", range(3, 6))):
        want = mean_pass_at_k([4] * len(rows), [table["correct"][i] for i in rows], [1, 2, 4])
        assert metrics[subset] == {f"pass@{k}": pytest.approx(v, abs=1e-6) for k, v in want.items()}
    assert "data_source=hard" in result.output  # the printed table has a row per source
    dry = runner.invoke(app, ["evaluate", "--dry-run", *[a for s in sets for a in ("--set", s)]])
    assert "6 problems (all 6, data_source=easy 3, data_source=hard 3)" in dry.output, dry.output
