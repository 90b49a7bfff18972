"""Filesystem access through pyarrow: local paths, pyarrow filesystem URIs and fsspec URLs.

Crash safety rests on one primitive: `atomic_write` writes to a temporary name in the
same directory and renames it into place, so a reader sees either the old file or the
complete new one — never a half-written file. (On object stores, `move` is a copy
plus delete; the final object still appears whole.)
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow.fs as pafs

from pipeline.errors import UserError

TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class Location:
    """A filesystem and a root path on it."""

    fs: pafs.FileSystem
    root: str

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)


# schemes pyarrow opens itself; any other `scheme://` goes through fsspec (hf://, memory://, …)
PYARROW_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})


def resolve(uri: str) -> Location:
    """`/local/dir`, `relative/dir`, `file:///x`, `s3://bucket/key` (pyarrow's own
    filesystems), or any fsspec URL — `hf://datasets/OWNER/NAME` (huggingface_hub's
    `HfFileSystem`), `memory://x`, … — wrapped in pyarrow's `FSSpecHandler` → `Location`."""
    if "://" not in uri:
        return Location(pafs.LocalFileSystem(), os.path.abspath(uri))
    if uri.split("://", 1)[0].lower() not in PYARROW_SCHEMES:
        return _resolve_fsspec(uri)
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise UserError(f"{uri}: cannot open this location ({exc}); give a local path or a pyarrow filesystem URI") from None
    return Location(fs, root)


def _resolve_fsspec(uri: str) -> Location:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError, OSError) as exc:  # unknown protocol, its package missing, or unreachable
        raise UserError(f"{uri}: cannot open this location ({exc}); give a local path, a pyarrow filesystem URI "
                        "or an fsspec URL whose package is installed (hf:// needs huggingface_hub)") from None
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root.rstrip("/") or "/")


def exists(loc: Location, rel: str) -> bool:
    return loc.fs.get_file_info(loc.path(rel)).type != pafs.FileType.NotFound


def atomic_write(loc: Location, rel: str, write: Callable[[Any], None]) -> None:
    """Call `write(stream)` on a temporary file, then rename it to `rel`."""
    final = loc.path(rel)
    tmp = posixpath.join(posixpath.dirname(final), f"{TMP_MARK}{uuid.uuid4().hex}-{posixpath.basename(final)}")
    loc.fs.create_dir(posixpath.dirname(final), recursive=True)
    try:
        with loc.fs.open_output_stream(tmp) as stream:
            write(stream)
        loc.fs.move(tmp, final)
    except BaseException:
        _remove_quietly(loc.fs, tmp)
        raise


def write_json(loc: Location, rel: str, data: Any) -> None:
    payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(loc, rel, lambda stream: stream.write(payload))


def read_json(loc: Location, rel: str) -> Any:
    with loc.fs.open_input_stream(loc.path(rel)) as stream:
        raw = stream.read()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{loc.path(rel)}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def list_files(loc: Location, rel: str) -> list[str]:
    """Base names of the files directly under `rel` (empty when it does not exist)."""
    selector = pafs.FileSelector(loc.path(rel), allow_not_found=True)
    return sorted(info.base_name for info in loc.fs.get_file_info(selector) if info.type == pafs.FileType.File)


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (OSError, FileNotFoundError):
        pass
