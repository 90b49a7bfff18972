"""Stage 2's view of a bank: an index loaded once, and row reads by position.

`BankReader` reads only the `prompt_id`/`sample_index`/`correct` columns of every shard
to build its index (`pool`: prompt id → global row positions; `correct`: each row's
cached verdict, so stage 2 can restrict draws to rewarded rows without reading them). `read(positions)` then fetches
full rows (or the `columns` the reader was opened with), touching only the Parquet row
groups that hold them; decoded row groups are kept in an LRU cache of `cache_row_groups`
groups (512 rows each), so an epoch over a bank that fits in memory decodes each group
once. `prefetch(positions)` decodes the groups a coming read will need on a background
thread (stage 2 asks for the next step's prompts while the current step trains); every
decode runs on that one thread, so a Parquet file is never read from two threads at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bank.schema import BANK_SCHEMA
from pipeline.bank.store import BankFiles, open_bank
from pipeline.errors import UserError


class BankReader:
    """Index of a bank plus positional row access."""

    def __init__(self, files: BankFiles, *, cache_row_groups: int = 256,
                 columns: Sequence[str] | None = None) -> None:
        self.files = files
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._cache_size = cache_row_groups
        unknown = sorted(set(columns or ()) - set(BANK_SCHEMA.names))
        if unknown:
            raise ValueError(f"not bank columns: {unknown}")
        self.schema = BANK_SCHEMA if columns is None else pa.schema([BANK_SCHEMA.field(c) for c in columns])
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], Future] = {}
        self._decoder: ThreadPoolExecutor | None = None
        ids, samples, correct, shard_of, row_of = [], [], [], [], []
        self._files: list[pq.ParquetFile] = []
        for i, shard in enumerate(files.shards):
            pf = self._open(shard.file)
            t = pf.read(columns=["prompt_id", "sample_index", "correct"])
            if t.num_rows != shard.rows:
                raise UserError(f"{files.location.path(shard.file)}: {t.num_rows} rows, manifest says {shard.rows}; "
                                "run `s2lpo bank verify` and re-run explore to repair")
            ids.append(t.column("prompt_id").to_numpy(zero_copy_only=False))
            samples.append(t.column("sample_index").to_numpy())
            correct.append(t.column("correct").to_numpy(zero_copy_only=False).astype(bool))
            shard_of.append(np.full(t.num_rows, i, dtype=np.int32))
            row_of.append(np.arange(t.num_rows, dtype=np.int64))
            self._files.append(pf)
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dtype=dt))
        self.prompt_ids = cat(ids, object)
        self.sample_index = cat(samples, np.int32)
        self.correct = cat(correct, bool)
        self.shard = cat(shard_of, np.int32)
        self.row = cat(row_of, np.int64)
        order = np.argsort(self.prompt_ids, kind="stable") if len(self.prompt_ids) else np.empty(0, np.int64)
        uniq, starts = np.unique(self.prompt_ids[order], return_index=True) if len(order) else ([], [])
        bounds = list(starts[1:]) + [len(order)] if len(order) else []
        self.pool = {pid: order[s:e] for pid, s, e in zip(uniq, starts, bounds)}

    @classmethod
    def open(cls, uri: str, *, columns: Sequence[str] | None = None) -> "BankReader":
        return cls(open_bank(uri), columns=columns)

    def _open(self, rel: str) -> pq.ParquetFile:
        path = self.files.location.path(rel)
        try:
            return pq.ParquetFile(self.files.location.fs.open_input_file(path))
        except (OSError, pa.ArrowInvalid) as exc:
            raise UserError(f"{path}: unreadable shard ({exc}); run `s2lpo bank verify {self.files.location.root}`") from None

    def shard_file(self, i: int) -> pq.ParquetFile:
        """The open Parquet file of shard `i` (in `files.shards` order)."""
        return self._files[i]

    def counts(self) -> dict[str, int]:
        return {pid: len(rows) for pid, rows in self.pool.items()}

    def read(self, positions: Sequence[int] | np.ndarray) -> pa.Table:
        """Full rows at global `positions`, in the order given."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return self.schema.empty_table()
        pieces, where = [], np.empty(len(positions), dtype=np.int64)
        by_shard: dict[int, list[int]] = defaultdict(list)
        for k, pos in enumerate(positions):
            by_shard[int(self.shard[pos])].append(k)
        offset = 0
        for shard, ks in by_shard.items():
            rows = self.row[positions[ks]]
            pieces.append(self._take(shard, rows))
            where[ks] = offset + np.arange(len(ks))
            offset += len(ks)
        table = pa.concat_tables(pieces)
        return table.take(pa.array(where))  # back to the requested order

    def _groups(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row-group start offsets of the shard, the group of each row)."""
        pf = self._files[shard]
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        return starts, np.searchsorted(starts, rows, side="right") - 1

    def _take(self, shard: int, rows: np.ndarray) -> pa.Table:
        starts, groups = self._groups(shard, rows)
        needed = sorted(set(groups.tolist()))
        tables = [self._row_group(shard, g) for g in needed]
        offset = dict(zip(needed, np.cumsum([0] + [t.num_rows for t in tables])[:-1]))
        local = [int(offset[g] + r - starts[g]) for g, r in zip(groups, rows)]
        return pa.concat_tables(tables).take(pa.array(local))

    def prefetch(self, positions: Sequence[int] | np.ndarray) -> None:
        """Start decoding, in the background, the row groups holding `positions`."""
        positions = np.asarray(positions, dtype=np.int64)
        for shard in np.unique(self.shard[positions]) if positions.size else ():
            _, groups = self._groups(int(shard), self.row[positions[self.shard[positions] == shard]])
            for g in sorted(set(groups.tolist())):
                self._submit((int(shard), g))

    def _submit(self, key: tuple[int, int]) -> Future:
        """The decode of `key`: done already when cached (which marks it recently used), else
        pending (started now if needed)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                done: Future = Future()
                done.set_result(self._cache[key])
                return done
            if key not in self._pending:
                if self._decoder is None:
                    self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bank-decode")
                self._pending[key] = self._decoder.submit(self._decode, key)
            return self._pending[key]

    def _decode(self, key: tuple[int, int]) -> pa.Table:
        shard, group = key
        try:
            table = self._files[shard].read_row_group(group, columns=self.schema.names).cast(self.schema)
        except BaseException:
            with self._lock:
                self._pending.pop(key, None)
            raise
        with self._lock:  # pending → cached in one step: no moment where a second decode could start
            self._pending.pop(key, None)
            self._cache[key] = table
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return table

    def _row_group(self, shard: int, group: int) -> pa.Table:
        return self._submit((shard, group)).result()

    def close(self) -> None:
        """Stop the background decoder (pending decodes finish first)."""
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoder = None
