import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from pipeline.bank.inspect import bank_info, verify_bank
from pipeline.bank.reader import BankReader
from pipeline.bank.store import open_bank
from pipeline.cli import app
from pipeline.data import Problem
from pipeline.errors import UserError
from stage1_explore.config import EngineKind, ExploreConfig
from stage1_explore.explore import missing_jobs, run_explore, worker_of

runner = CliRunner()


def config(family, bank, **kw) -> ExploreConfig:
    base = dict(prompts=str(family / "train.jsonl"), explorer=str(family / "explorer"), bank=str(bank),
                samples_per_prompt=4, max_new_tokens=12, prompts_per_shard=16, engine=EngineKind.HF,
                scoring_workers=0)
    base.update(kw)
    return ExploreConfig(**base)


def test_missing_jobs_and_partition_are_pure():
    probs = [Problem("x", "1+1", "2", {}), Problem("y", "1+2", "3", {})]
    jobs = missing_jobs(probs, {"x": {0, 2}, "y": {0, 1, 2}}, 3)
    assert [(j.problem.id, j.sample_indices) for j in jobs] == [("x", (1,))]
    owners = [worker_of(f"p{i}", 3) for i in range(300)]
    assert owners == [worker_of(f"p{i}", 3) for i in range(300)] and set(owners) == {0, 1, 2}


def test_fill_rerun_and_raise_m(tiny_family, tmp_path):
    bank = tmp_path / "bank"
    first = run_explore(config(tiny_family, bank), echo=lambda s: None)
    assert first["generated"] == 160
    files = open_bank(str(bank))
    assert len(files.shards) == 3 and verify_bank(files, 4) == []
    assert run_explore(config(tiny_family, bank), echo=lambda s: None)["generated"] == 0  # no work
    assert run_explore(config(tiny_family, bank, samples_per_prompt=6), echo=lambda s: None)["generated"] == 80
    reader = BankReader.open(str(bank))
    assert set(reader.counts().values()) == {6} and verify_bank(reader.files, 6) == []
    row = reader.read(reader.pool["p000"]).to_pylist()
    assert sorted(r["sample_index"] for r in row) == list(range(6))
    r = row[0]
    assert r["prompt"] == r["prompt"].split("=")[0] + "=" and len(r["response_token_ids"]) == len(r["logprobs"])
    assert r["reward"] == float(r["correct"]) and r["response_length"] == len(r["response_token_ids"])
    info = bank_info(reader)
    assert info["rows"] == 240 and info["samples_per_prompt"] == {"min": 6, "max": 6}


def test_different_settings_are_refused(tiny_family, tmp_path):
    run_explore(config(tiny_family, tmp_path, samples_per_prompt=1), echo=lambda s: None)
    with pytest.raises(UserError, match="sampling.temperature"):
        run_explore(config(tiny_family, tmp_path, samples_per_prompt=1, temperature=1.0), echo=lambda s: None)
    with pytest.raises(UserError, match="template"):
        run_explore(config(tiny_family, tmp_path, samples_per_prompt=1, template="Q: {question}="), echo=lambda s: None)


def test_an_explorer_that_fails_to_load_claims_no_bank(tiny_family, tmp_path):
    """The tokenizer loads but the weights do not: the error comes before bank.json is
    written, so the same bank path takes the repaired explorer (and nothing else)."""
    import shutil

    explorer = tmp_path / "explorer"
    shutil.copytree(tiny_family / "explorer", explorer)
    weights = explorer / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    bank = tmp_path / "bank"
    with pytest.raises(UserError, match="cannot load a causal LM"):
        run_explore(config(tiny_family, bank, explorer=str(explorer), samples_per_prompt=1), echo=lambda s: None)
    assert not (bank / "bank.json").exists()
    weights.write_bytes(good)
    done = run_explore(config(tiny_family, bank, explorer=str(explorer), samples_per_prompt=1), echo=lambda s: None)
    assert done["generated"] == 40 and verify_bank(open_bank(str(bank)), 1) == []


def test_two_workers_fill_one_bank(tiny_family, tmp_path):
    done = [run_explore(config(tiny_family, tmp_path), worker_index=i, num_workers=2, echo=lambda s: None)
            for i in (0, 1)]
    assert sum(d["generated"] for d in done) == 160 and min(d["generated"] for d in done) > 0
    assert verify_bank(open_bank(str(tmp_path)), 4) == []


def test_same_seed_same_bank(tiny_family, tmp_path):
    for name in ("a", "b"):
        run_explore(config(tiny_family, tmp_path / name, limit=8), echo=lambda s: None)
    a, b = (BankReader.open(str(tmp_path / n)) for n in "ab")
    cols = ["prompt_id", "sample_index", "response"]
    assert a.read(range(32)).select(cols).to_pylist() == b.read(range(32)).select(cols).to_pylist()


@pytest.mark.parametrize("setup, key, needle", [
    (lambda d: (d / "p.jsonl").write_text('{"question": "1+1"}\n'), "prompts", "answer"),
    (lambda d: (d / "p.jsonl").write_text(""), "prompts", "p.jsonl"),
    (lambda d: (d / "m").mkdir(), "explorer", "cannot load a tokenizer"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_family, tmp_path, setup, key, needle):
    setup(tmp_path)
    value = {"prompts": str(tmp_path / "p.jsonl"), "explorer": str(tmp_path / "m")}[key]
    result = runner.invoke(app, ["explore", "--set", f"{key}={value}", "--set", f"bank={tmp_path / 'bank'}",
                                 "--set", f"prompts={tiny_family / 'train.jsonl'}" if key != "prompts" else "limit=3"])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "bank").exists()


def test_bank_cli_info_and_verify(tiny_family, tmp_path):
    run_explore(config(tiny_family, tmp_path, limit=5), echo=lambda s: None)
    info = runner.invoke(app, ["bank", "info", str(tmp_path), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["rows"] == 20
    ok = runner.invoke(app, ["bank", "verify", str(tmp_path), "-m", "4"])
    assert ok.exit_code == 0 and "ok: 20 rows" in ok.output
    bad = runner.invoke(app, ["bank", "verify", str(tmp_path), "-m", "5"])
    assert bad.exit_code == 1 and "without exactly 5 rows" in bad.output
    missing = runner.invoke(app, ["bank", "info", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a rollout bank" in missing.output


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_exactly_m_rows(tiny_family, tmp_path):
    params = tmp_path / "params.yaml"
    bank = tmp_path / "bank"
    params.write_text(json.dumps({"explore": dict(
        prompts=str(tiny_family / "train.jsonl"), explorer=str(tiny_family / "explorer"), bank=str(bank),
        samples_per_prompt=6, max_new_tokens=24, prompts_per_shard=2, engine="hf", scoring_workers=0)}))
    cmd = [sys.executable, "-m", "pipeline.cli", "explore", "--params", str(params)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    manifest = bank / "manifests" / "worker-0of1.json"
    while time.time() < deadline and not (manifest.exists() and json.loads(manifest.read_text())["rows"] >= 24):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_bank(str(bank))
    assert 0 < partial.rows < 240 and verify_bank(partial) == []  # killed part-way, still valid
    subprocess.run(cmd, check=True, capture_output=True)
    assert verify_bank(open_bank(str(bank)), 6) == []
    assert BankReader.open(str(bank)).files.rows == 240


def test_bank_reads_with_plain_pandas_pyarrow_and_datasets(tiny_family, tmp_path):
    """The snippet in docs/bank.md: a bank is plain Parquet."""
    import datasets
    import pandas as pd
    import pyarrow.dataset as ds

    run_explore(config(tiny_family, tmp_path, limit=6), echo=lambda s: None)
    shards = tmp_path / "shards"
    df = pd.read_parquet(shards)
    table = ds.dataset(str(shards), format="parquet").to_table()
    hf = datasets.load_dataset("parquet", data_files=str(shards / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert len(df) == table.num_rows == len(hf) == 24
    assert set(df["prompt_id"]) == {f"p{i:03d}" for i in range(6)}
    assert hf[0]["response_length"] == len(hf[0]["response_token_ids"])
