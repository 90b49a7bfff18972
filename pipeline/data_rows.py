"""Row readers for `pipeline.data.load_problems`: each yields (human-readable location, row dict).

Sources: a local `.jsonl` / `.json` / `.parquet` file, a directory of parquet files, or a
Hugging Face hub dataset id (`owner/name`, read with `datasets.load_dataset`). Local files
are read directly (json / pyarrow) and never touch the network. Every unreadable input is
a one-line `UserError` naming the file (and line or item) and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def iter_rows(source: str, *, split: str) -> Iterator[tuple[str, dict]]:
    """Dispatch on the source kind; raises UserError for a missing or unsupported path."""
    path = Path(source)
    if path.is_dir():
        return _iter_parquet_dir(path, split=split)
    if path.is_file():
        readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".parquet": _iter_parquet}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise UserError(f"{path}: unsupported file type; give a .jsonl, .json or .parquet file")
        return reader(path)
    if _HUB_ID.match(source) and not source.lower().endswith(_LOCAL_SUFFIXES):
        return _iter_hub(source, split=split)
    raise UserError(f"{source}: file not found; check the path (or give a hub dataset id owner/name)")


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a JSON-lines file; blank lines are skipped, bad lines name their number."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); check permissions") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield f"line {lineno}", parse_json_line(path, lineno, line)
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; re-save the file as UTF-8 JSON lines") from None


def parse_json_line(path: Path, lineno: int, line: str) -> dict:
    """One JSONL line as a dict, or a UserError naming file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove the line") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
    return row


def _iter_json(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a JSON file holding a list of objects (or `{"data": [...]}`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise UserError(f"{path}: not valid JSON ({detail}); fix the file or use JSON lines") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
    for index, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: item {index} is a {type(row).__name__}, expected a JSON object")
        yield f"item {index}", row


def _iter_parquet(path: Path, *, label: str = "") -> Iterator[tuple[str, dict]]:
    """Rows of one parquet file, read in record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc}); re-export it") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            index += 1
            yield f"{label}row {index}", row


def _iter_parquet_dir(path: Path, *, split: str) -> Iterator[tuple[str, dict]]:
    """Rows of every parquet file under `path` (only `<split>-*` files when any exist)."""
    files = sorted(path.rglob("*.parquet"))
    in_split = [f for f in files if f.name.startswith(f"{split}-") or f.stem == split]
    files = in_split or files
    if not files:
        raise UserError(f"{path}: directory has no .parquet files; give a data file or a parquet directory")
    for file in files:
        yield from _iter_parquet(file, label=f"{file.relative_to(path)} ")


def _iter_hub(source: str, *, split: str) -> Iterator[tuple[str, dict]]:
    """Rows of a hub dataset split, via `datasets.load_dataset` (arrow batches)."""
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"{source}: hub dataset (split {split!r}) could not be loaded ({reason}); "
            "check the id and network, or give a local .jsonl/.parquet path instead"
        ) from None
    index = 0
    for table in dataset.with_format("arrow").iter(batch_size=4096):
        for row in table.to_pylist():
            index += 1
            yield f"row {index}", row
