import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.bank.reader import BankReader
from pipeline.bank.schema import BANK_SCHEMA, BankRecord, records_to_table, table_to_records
from pipeline.bank.store import BankWriter, open_bank
from pipeline.errors import UserError

IDENTITY = {"explorer": {"model": "m", "revision": "r"}, "sampling": {"temperature": 0.7}}


def rec(pid: str, s: int, n_tokens: int = 3) -> BankRecord:
    return BankRecord(pid, s, f"{pid}=", [1, 2], f"r{s}", list(range(n_tokens)), [-0.5] * n_tokens,
                      float(s % 2), bool(s % 2), str(s), "stop", n_tokens)


def test_record_roundtrip_and_schema_match():
    records = [rec("a", 0), rec("b", 1)]
    table = records_to_table(records)
    assert table.schema == BANK_SCHEMA
    assert table_to_records(table) == records  # -0.5 is exact in float32


def test_write_open_and_read_rows_in_requested_order(tmp_path):
    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", i) for i in range(4)]))
    w.write_shard(records_to_table([rec("b", i) for i in range(3)] + [rec("a", 4)]))
    reader = BankReader.open(str(tmp_path))
    assert reader.files.rows == 8 and reader.counts() == {"a": 5, "b": 3}
    positions = np.concatenate([reader.pool["b"][::-1], reader.pool["a"][:2]])
    rows = table_to_records(reader.read(positions))
    assert [(r.prompt_id, r.sample_index) for r in rows] == [("b", 2), ("b", 1), ("b", 0), ("a", 0), ("a", 1)]
    assert reader.read([]).num_rows == 0


def test_other_settings_are_refused_naming_the_field(tmp_path):
    BankWriter(str(tmp_path), IDENTITY)
    other = {**IDENTITY, "sampling": {"temperature": 1.0}}
    with pytest.raises(UserError, match=r"sampling.temperature: bank has 0.7, now 1.0"):
        BankWriter(str(tmp_path), other)


def test_workers_fill_one_bank_and_resume_their_own_manifest(tmp_path):
    w0 = BankWriter(str(tmp_path), IDENTITY, worker_index=0, num_workers=2)
    w1 = BankWriter(str(tmp_path), IDENTITY, worker_index=1, num_workers=2)
    w0.write_shard(records_to_table([rec("a", 0)]))
    w1.write_shard(records_to_table([rec("b", 0)]))
    w0.write_shard(records_to_table([rec("a", 1)]))
    files = open_bank(str(tmp_path))
    assert sorted(s.file for s in files.shards) == [
        "shards/w000-000001.parquet", "shards/w000-000002.parquet", "shards/w001-000001.parquet"]
    again = BankWriter(str(tmp_path), IDENTITY, worker_index=0, num_workers=2)
    assert again.write_shard(records_to_table([rec("a", 2)])).file == "shards/w000-000003.parquet"
    assert BankReader.open(str(tmp_path)).counts() == {"a": 3, "b": 1}
    with pytest.raises(UserError, match="--worker-index 2 must be in 0..1"):
        BankWriter(str(tmp_path), IDENTITY, worker_index=2, num_workers=2)


def test_unnamed_shards_are_ignored_then_cleaned(tmp_path):
    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", 0)]))
    # a kill between the shard rename and the manifest update leaves an unnamed shard
    pq.write_table(records_to_table([rec("a", 0)]), tmp_path / "shards" / "w000-000002.parquet")
    (tmp_path / "shards" / ".tmp-abc-w000-000003.parquet").write_bytes(b"partial")
    assert BankReader.open(str(tmp_path)).counts() == {"a": 1}
    BankWriter(str(tmp_path), IDENTITY)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["w000-000001.parquet"]


def test_failed_shard_write_leaves_the_previous_state(tmp_path, monkeypatch):
    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", 0)]))
    manifest = (tmp_path / "manifests" / "worker-0of1.json").read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(UserError, match=r"w000-000002.parquet: cannot write this shard \(.*No space left.*re-run"):
        w.write_shard(records_to_table([rec("a", 1)]))
    assert (tmp_path / "manifests" / "worker-0of1.json").read_text() == manifest
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["w000-000001.parquet"]
    assert json.loads(manifest)["rows"] == 1
    monkeypatch.undo()
    assert w.write_shard(records_to_table([rec("a", 1)])).file == "shards/w000-000002.parquet"  # writer unchanged
    assert BankReader.open(str(tmp_path)).counts() == {"a": 2}


def test_not_a_bank_and_unwritable_location(tmp_path):
    with pytest.raises(UserError, match="not a rollout bank"):
        open_bank(str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create the bank here"):
        BankWriter(str(blocker / "bank"), IDENTITY)


def test_corrupt_shard_is_reported_not_a_traceback(tmp_path):
    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", 0)]))
    shard = tmp_path / "shards" / "w000-000001.parquet"
    shard.write_bytes(shard.read_bytes()[: 40])
    with pytest.raises(UserError, match="w000-000001.parquet: unreadable shard"):
        BankReader.open(str(tmp_path))


def test_projected_reader_with_prefetch_reads_what_the_full_reader_reads(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.bank.store.ROW_GROUP_ROWS", 100)
    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", i, n_tokens=1 + i % 4) for i in range(1200)]))
    w.write_shard(records_to_table([rec("b", i) for i in range(300)]))
    full = BankReader.open(str(tmp_path))
    assert full.shard_file(0).num_row_groups == 12
    cols = ["response", "response_token_ids", "logprobs", "reward"]
    lean = BankReader(open_bank(str(tmp_path)), columns=cols, cache_row_groups=4)
    rng = np.random.default_rng(0)
    for _ in range(30):
        positions = rng.choice(full.files.rows, size=17, replace=False)
        lean.prefetch(rng.choice(full.files.rows, size=40))  # some of these will be evicted before use
        lean.prefetch(positions)
        got = lean.read(positions)
        assert got.schema.names == cols
        assert got.to_pydict() == full.read(positions).select(cols).to_pydict()
    assert lean.read([]).schema.names == cols
    lean.close()
    assert lean.read([5]).to_pydict() == full.read([5]).select(cols).to_pydict()  # a closed reader decodes on demand
    with pytest.raises(ValueError, match="nope"):
        BankReader.open(str(tmp_path), columns=["nope"])


def test_verify_names_a_shard_with_non_finite_rewards(tmp_path):
    from pipeline.bank.inspect import verify_bank

    w = BankWriter(str(tmp_path), IDENTITY)
    w.write_shard(records_to_table([rec("a", 0), rec("a", 1)]))
    assert verify_bank(open_bank(str(tmp_path)), 2) == []
    bad = [rec("b", 0), rec("b", 1)]
    bad[1] = BankRecord(*[float("nan") if f == "reward" else getattr(bad[1], f) for f in BankRecord.__dataclass_fields__])
    entry = w.write_shard(records_to_table(bad))
    problems = verify_bank(open_bank(str(tmp_path)), 2)
    assert len(problems) == 1 and problems[0].startswith(f"{entry.file}: 1 rows with a non-finite reward")
