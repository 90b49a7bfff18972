"""Writing bank shards off the critical path: one thread, in submission order.

`BackgroundWriter` hands each chunk of records to a single writer thread that turns it
into an Arrow table and calls `BankWriter.write_shard`, so the explorer generates the
next chunk while the last one is encoded, compressed and committed. pyarrow's Parquet
encoding and zstd compression release the GIL, as does torch's generation.

Crash safety is `BankWriter`'s, unchanged: each shard is renamed into place and then
named by an atomically replaced manifest, from the one thread that owns this worker's
files. A kill at any moment leaves a valid bank; records still waiting in the queue are
simply not in it, and the resumed run generates them again.

At most `depth` chunks wait for the thread (then `submit` blocks), so memory stays
bounded when writing is slower than generating (a slow object store). An error in the
thread (a `UserError` from `write_shard`, or a bug) is raised in the caller by the next
`submit` or by `close`; the thread writes nothing after it.
"""

from __future__ import annotations

import queue
import threading

from pipeline.bank.schema import BankRecord, records_to_table
from pipeline.bank.store import BankWriter, ShardEntry

_DONE = object()


class BackgroundWriter:
    """Context manager around a `BankWriter`; `close` waits for every submitted shard."""

    def __init__(self, writer: BankWriter, *, depth: int = 1) -> None:
        self.writer = writer
        self.written: list[ShardEntry] = []
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bank-writer", daemon=True)
        self._thread.start()

    def submit(self, records: list[BankRecord]) -> None:
        """Queue one shard's records (blocks while `depth` shards are already waiting)."""
        self._raise_if_failed()
        self._queue.put(list(records))

    def close(self) -> list[ShardEntry]:
        """Wait until every submitted shard is committed; the shards written, in order."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        self._raise_if_failed()
        return self.written

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # the body failed (perhaps because of this writer's error, raised by submit):
        # commit what was submitted before, and let the body's exception propagate
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def _run(self) -> None:
        while (records := self._queue.get()) is not _DONE:
            if self._error is not None:
                continue  # drain without writing, so a blocked submit wakes up and raises
            try:
                self.written.append(self.writer.write_shard(records_to_table(records)))
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
