"""Bank files: identity (bank.json), per-worker manifests and Parquet shards.

`BankWriter` is the only writer: each of N workers owns `manifests/worker-IofN.json`
and shards named `shards/wIII-SSSSSS.parquet`, so N jobs can fill one bank directory
side by side. `open_bank` reads the identity and the union of all manifests: only
shards a manifest names are part of the bank.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bank.schema import BANK_SCHEMA, SCHEMA_VERSION
from pipeline.errors import UserError
from pipeline.fs import TMP_MARK, Location, atomic_write, exists, list_files, read_json, resolve, write_json

IDENTITY_FILE = "bank.json"
MANIFEST_DIR = "manifests"
SHARD_DIR = "shards"
ROW_GROUP_ROWS = 512  # small row groups let stage 2 read a few prompts without whole shards
# Dictionary-encode only the string columns that repeat (a prompt's M rows share its id and
# text; answers and finish reasons come from small sets). Log-probs are nearly all distinct:
# a dictionary there cost half of a 2048-row shard's write and made the file larger
# (8.7 → 4.0 ms CPU, 399 → 306 kB on the testbed explorer's rollouts).
DICTIONARY_COLUMNS = ["prompt_id", "prompt", "extracted_answer", "finish_reason"]


def fingerprint(identity: dict) -> str:
    """sha256 of the identity's canonical JSON (the bank's name for what it contains)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def manifest_name(worker_index: int, num_workers: int) -> str:
    return f"{MANIFEST_DIR}/worker-{worker_index}of{num_workers}.json"


@dataclass(frozen=True)
class ShardEntry:
    file: str  # relative to the bank root
    rows: int
    worker: str  # manifest that names it


@dataclass(frozen=True)
class BankFiles:
    """What `open_bank` found: the identity and every complete shard."""

    location: Location
    identity: dict
    created: float
    shards: tuple[ShardEntry, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def open_bank(uri: str) -> BankFiles:
    """Read bank.json and the union of all worker manifests."""
    loc = resolve(uri)
    if not exists(loc, IDENTITY_FILE):
        raise UserError(f"{loc.path(IDENTITY_FILE)}: not a rollout bank (no bank.json); run `s2lpo explore` first")
    head = read_json(loc, IDENTITY_FILE)
    if not isinstance(head, dict) or head.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{loc.path(IDENTITY_FILE)}: schema version {head.get('schema_version')!r} is not "
                        f"{SCHEMA_VERSION}; rebuild the bank with this s2lpo version")
    shards = []
    for name in list_files(loc, MANIFEST_DIR):
        if name.endswith(".json") and not name.startswith(TMP_MARK):
            manifest = read_json(loc, f"{MANIFEST_DIR}/{name}")
            shards.extend(ShardEntry(s["file"], int(s["rows"]), name) for s in manifest.get("shards", []))
    return BankFiles(loc, head["identity"], float(head["created"]), tuple(shards))


def check_claim(uri: str, identity: dict, *, worker_index: int = 0, num_workers: int = 1) -> bool:
    """What `BankWriter(uri, identity, …)` would refuse, refused now without writing
    bank.json (explore asks before loading its engine); True when the bank exists. A new
    bank's directory is created, so an unwritable path fails here too."""
    _check_worker(worker_index, num_workers)
    loc = resolve(uri)
    if not exists(loc, IDENTITY_FILE):
        _make_dirs(loc)  # an unwritable path fails now; an empty directory is not a bank
        return False
    _check_identity(loc, read_json(loc, IDENTITY_FILE), identity)
    return True


def _check_worker(worker_index: int, num_workers: int) -> None:
    if not 0 <= worker_index < num_workers:
        raise UserError(f"--worker-index {worker_index} must be in 0..{num_workers - 1} (--num-workers {num_workers})")


def _make_dirs(loc) -> None:
    try:
        loc.fs.create_dir(loc.path(SHARD_DIR), recursive=True)
    except OSError as exc:
        raise UserError(f"{loc.root}: cannot create the bank here ({exc}); choose a writable bank path") from None


def _check_identity(loc, existing: dict, identity: dict) -> None:
    if existing.get("fingerprint") != fingerprint(identity):
        diff = _first_difference(existing.get("identity", {}), identity)
        raise UserError(f"{loc.path(IDENTITY_FILE)}: this bank was built with other settings ({diff}); "
                        "use a new bank path or restore the original settings")


class BankWriter:
    """Appends complete shards for one worker of N; refuses a bank of another identity.
    Creating one writes bank.json when the bank is new."""

    def __init__(self, uri: str, identity: dict, *, worker_index: int = 0, num_workers: int = 1) -> None:
        _check_worker(worker_index, num_workers)
        self.loc = resolve(uri)
        self.identity = identity
        self.worker_index, self.num_workers = worker_index, num_workers
        self._claim_identity()
        self._manifest_rel = manifest_name(worker_index, num_workers)
        own = read_json(self.loc, self._manifest_rel) if exists(self.loc, self._manifest_rel) else {}
        self.shards: list[dict] = list(own.get("shards", []))
        self._remove_orphans()

    def _claim_identity(self) -> None:
        _make_dirs(self.loc)
        head = {"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint(self.identity),
                "identity": self.identity, "created": time.time()}
        if not exists(self.loc, IDENTITY_FILE):
            write_json(self.loc, IDENTITY_FILE, head)
        _check_identity(self.loc, read_json(self.loc, IDENTITY_FILE), self.identity)

    def _remove_orphans(self) -> None:
        """Shards of this worker that no manifest names (a kill between write and manifest)."""
        named = {s["file"] for s in self.shards}
        prefix = f"w{self.worker_index:03d}-"
        for name in list_files(self.loc, SHARD_DIR):
            rel = f"{SHARD_DIR}/{name}"
            own_tmp = name.startswith(TMP_MARK) and name.split("-", 2)[-1].startswith(prefix)
            if (name.startswith(prefix) and rel not in named) or own_tmp:
                self.loc.fs.delete_file(self.loc.path(rel))

    def write_shard(self, table: pa.Table) -> ShardEntry:
        """Write one shard atomically, then replace this worker's manifest atomically.

        A failed write (disk full, permissions) is a one-line `UserError`; the bank on disk
        and this writer are then as they were before the call."""
        if table.schema != BANK_SCHEMA:
            table = table.cast(BANK_SCHEMA)
        seq = 1 + max((int(s["file"].rsplit("-", 1)[1].split(".")[0]) for s in self.shards), default=0)
        rel = f"{SHARD_DIR}/w{self.worker_index:03d}-{seq:06d}.parquet"
        shards = [*self.shards, {"file": rel, "rows": table.num_rows, "written": time.time()}]
        try:
            atomic_write(self.loc, rel, lambda stream: pq.write_table(
                table, stream, compression="zstd", row_group_size=ROW_GROUP_ROWS, use_dictionary=DICTIONARY_COLUMNS))
            write_json(self.loc, self._manifest_rel, {
                "worker_index": self.worker_index, "num_workers": self.num_workers,
                "fingerprint": fingerprint(self.identity), "rows": sum(s["rows"] for s in shards),
                "shards": shards})
        except OSError as exc:  # a shard renamed before a failed manifest write is an orphan, removed on resume
            raise UserError(f"{self.loc.path(rel)}: cannot write this shard ({exc}); free space or fix permissions "
                            "and re-run the same command, which resumes the bank") from None
        self.shards = shards
        return ShardEntry(rel, table.num_rows, self._manifest_rel)


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: bank has {a!r}, now {b!r}"
    return ""
