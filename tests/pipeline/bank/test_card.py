"""`s2lpo bank card` (a folder `datasets.load_dataset` opens) and banks on fsspec filesystems
(fsspec's own `memory://`, the stand-in for `hf://datasets/OWNER/NAME`)."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.bank.draw import draw_rows
from pipeline.bank.reader import BankReader
from pipeline.bank.schema import BANK_SCHEMA, BankRecord, records_to_table, table_to_records
from pipeline.bank.store import BankWriter, open_bank
from pipeline.cli import app
from pipeline.errors import UserError

IDENTITY = {"schema_version": 1, "explorer": {"model": "Qwen/Qwen3-1.7B-Base", "revision": "main"},
            "tokenizer": "0123abcd", "template": {"text": "{question}=", "fingerprint": "ffff"},
            "sampling": {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 48},
            "verifier": {"name": "s2lpo-math", "version": "v1"},
            "stop_token_ids": [151643, 151645]}  # a field this module does not know: it must show up anyway


def rec(pid: str, s: int) -> BankRecord:
    n = 2 + s
    return BankRecord(pid, s, f"{pid}=", [1, 2], f"r{s}", list(range(n)), [-0.25] * n, float(s % 2), bool(s % 2),
                      str(s) if s % 2 else None, "stop", n)


def fill(uri: str) -> list[BankRecord]:
    records = [rec(f"p{i}", s) for i in range(5) for s in range(4)]
    writer = BankWriter(uri, IDENTITY)
    writer.write_shard(records_to_table(records[:8]))
    writer.write_shard(records_to_table(records[8:]))
    return records


@pytest.mark.slow  # ~8 s: datasets' import and its Arrow conversion
def test_card_makes_a_folder_load_dataset_opens(tmp_path):
    import datasets

    records = fill(str(tmp_path / "bank"))
    # an orphan (a shard no manifest names, e.g. left by a kill) must not be part of the dataset
    pq.write_table(records_to_table(records[:3]), tmp_path / "bank" / "shards" / "w000-000009.parquet")
    res = CliRunner().invoke(app, ["bank", "card", str(tmp_path / "bank")])
    assert res.exit_code == 0, res.output
    assert "20 rows, 2 shards" in res.output and "--repo-type dataset" in res.output
    text = (tmp_path / "bank" / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other"
    assert header["configs"][0]["data_files"][0]["path"] == ["shards/w000-000001.parquet", "shards/w000-000002.parquet"]
    assert header["s2lpo_bank"]["identity"] == IDENTITY
    assert "| `explorer.model` | Qwen/Qwen3-1.7B-Base |" in text and "| `stop_token_ids` | [151643, 151645] |" in text
    assert "| `sampling.temperature` | 0.7 |" in text

    ds = datasets.load_dataset(str(tmp_path / "bank"), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 20 and ds.column_names == BANK_SCHEMA.names
    assert ds.features["response_token_ids"].feature.dtype == "int32"
    assert ds.features["logprobs"].feature.dtype == "float32" and ds.features["reward"].dtype == "float32"
    assert [BankRecord(**row) for row in ds] == records


def test_card_licence_and_name(tmp_path):
    fill(str(tmp_path / "bank"))
    res = CliRunner().invoke(app, ["bank", "card", str(tmp_path / "bank"), "--license", "apache-2.0",
                                   "--name", "my bank"])
    assert res.exit_code == 0, res.output
    header = yaml.safe_load((tmp_path / "bank" / "README.md").read_text().split("---\n")[1])
    assert header["license"] == "apache-2.0" and header["pretty_name"] == "my bank"
    assert CliRunner().invoke(app, ["bank", "card", str(tmp_path / "none")]).exit_code == 2


@pytest.fixture
def memory_bank():
    """A bank written into fsspec's in-memory filesystem (removed afterwards)."""
    uri = f"memory://banks/b{np.random.default_rng().integers(1 << 30)}"
    yield uri, fill(uri)
    fsspec.filesystem("memory").rm(uri.removeprefix("memory://"), recursive=True)


def test_a_bank_on_an_fsspec_filesystem_is_read_and_drawn_from(memory_bank):
    uri, records = memory_bank
    mem = fsspec.filesystem("memory")
    assert mem.exists(uri.removeprefix("memory://") + "/bank.json")  # really written there, not locally
    reader = BankReader.open(uri)
    assert reader.files.rows == 20 and reader.counts() == {f"p{i}": 4 for i in range(5)}
    draw = draw_rows(reader.pool, [("p1", 3), ("p4", 2)], np.random.default_rng(0))
    rows = table_to_records(reader.read(np.concatenate(draw.rows)))
    assert [r.prompt_id for r in rows] == ["p1"] * 3 + ["p4"] * 2
    assert all(r == records[int(r.prompt_id[1:]) * 4 + r.sample_index] for r in rows)
    assert open_bank(uri).identity == IDENTITY


def test_cli_info_verify_and_card_on_an_fsspec_bank(memory_bank):
    uri, _ = memory_bank
    runner = CliRunner()
    assert "ok: 20 rows in 2 shards" in runner.invoke(app, ["bank", "verify", uri]).output
    assert "20 rows, 5 prompts, 2 shards" in runner.invoke(app, ["bank", "info", uri]).output
    assert runner.invoke(app, ["bank", "card", uri]).exit_code == 0
    assert "configs:" in fsspec.filesystem("memory").cat(uri.removeprefix("memory://") + "/README.md").decode()


def test_an_unknown_url_scheme_is_one_line():
    with pytest.raises(UserError, match="nosuchfs://x: cannot open this location"):
        open_bank("nosuchfs://x")
