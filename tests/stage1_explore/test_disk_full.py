"""A full disk in the middle of `s2lpo explore`: one error line, the shards committed
before it intact, and the same command resumes the bank once space is free."""

from __future__ import annotations

import errno
import os

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipeline.bank.inspect import verify_bank
from pipeline.bank.reader import BankReader
from pipeline.bank.store import open_bank
from pipeline.cli import app

runner = CliRunner()


def test_a_full_disk_mid_explore_is_one_line_and_the_same_command_resumes(tiny_family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bank = tmp_path / "bank"
    sets = {"prompts": tiny_family / "train.jsonl", "explorer": tiny_family / "explorer", "bank": bank, "limit": 6,
            "samples_per_prompt": 2, "max_new_tokens": 6, "prompts_per_shard": 2, "engine": "hf",
            "scoring_workers": 0}
    args = ["explore", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    real, shards = pq.write_table, []

    def write_table(*a, **kw):  # the third shard finds the disk full
        shards.append(a)
        if len(shards) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)

    monkeypatch.setattr(pq, "write_table", write_table)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {bank}/shards/w000-000003.parquet: cannot write this shard ([Errno 28] No space left "
                      "on device); free space or fix permissions and re-run the same command, which resumes the bank"]
    assert "Traceback" not in result.output
    files = open_bank(str(bank))
    assert verify_bank(files) == [] and files.rows == 8  # the two shards before the failure
    assert sorted(p.name for p in (bank / "shards").iterdir()) == ["w000-000001.parquet", "w000-000002.parquet"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, args).exit_code == 0
    reader = BankReader.open(str(bank))
    assert verify_bank(reader.files, 2) == [] and reader.files.rows == 12
