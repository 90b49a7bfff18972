"""Problem loaders: one `Problem` record for every prompt set (training and benchmarks).

Every stage that reads math problems — the explorer building its bank, the learner's
GRPO loop, evaluation — goes through `load_problems`, so they all agree on what a
problem's id, question and ground-truth answer are.

Sources: a local `.jsonl` / `.json` / `.parquet` file, a directory of parquet files,
or a Hugging Face hub dataset id (`owner/name`, read with `datasets.load_dataset`).
Local files are read directly (json / pyarrow) and never touch the network.

Layouts (`Layout`):
- `qa`   — flat rows with `question` (or `problem`) and `answer` (AIME, MATH-500).
- `verl` — DAPO-Math-17k's verl rows: `prompt` is a chat list whose last user
  message is the question, the answer is `reward_model.ground_truth`, the id is
  `extra_info.index`.
- `auto` — chosen from the first row's keys.

Invariants of the returned list:
- ids are unique: the id field stringified, else `question_hash_id(question)`;
- no two problems share a whitespace-normalised question when `dedup=True` (the
  first row wins; DAPO-Math-17k repeats every prompt ~100 times);
- a question that appears with two different answers is an error, never a coin flip.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

_MISSING = object()
_SCALARS = (str, int, float, bool, type(None))
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
_QA_QUESTION_FIELDS = ("question", "problem")
_QA_ID_FIELDS = ("id", "unique_id")
_VERL_QUESTION_FIELD = "prompt"
_VERL_ANSWER_FIELD = "reward_model.ground_truth"
_VERL_ID_FIELD = "extra_info.index"


@dataclass(frozen=True)
class Problem:
    """One math problem.

    `meta` holds the row's other top-level scalar fields (e.g. `exam`, `level`,
    `flawed`, `data_source`). It is excluded from hashing so a `Problem` stays
    hashable; treat it as read-only.
    """

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict, hash=False)


class Layout(str, enum.Enum):
    """How a row's question, answer and id are laid out (see the module docstring)."""

    AUTO = "auto"
    QA = "qa"
    VERL = "verl"


@dataclass(frozen=True)
class _Fields:
    """Resolved dotted paths of the question, answer and (optional) id fields."""

    question: str
    answer: str
    id: str | None


def normalise_question(question: str) -> str:
    """Collapse every whitespace run to one space and strip the ends (the dedup key)."""
    return " ".join(question.split())


def question_hash_id(question: str) -> str:
    """Stable id for a problem without one: first 16 hex of sha1(normalised question)."""
    return hashlib.sha1(normalise_question(question).encode("utf-8")).hexdigest()[:16]


def load_problems(
    source: str,
    *,
    split: str = "train",
    layout: str = "auto",
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    dedup: bool = True,
    limit: int | None = None,
) -> list[Problem]:
    """Read a prompt set into `Problem`s, in source order.

    Args:
        source: local `.jsonl`/`.json`/`.parquet` file, a directory of parquet files,
            or a hub dataset id `owner/name` (any string that is not an existing path).
        split: hub split, or for a parquet directory the `<split>-*.parquet` files
            when such files exist. Ignored for single files.
        layout: `auto`, `qa` or `verl` (see `Layout`).
        question_field / answer_field / id_field: dotted paths (`reward_model.ground_truth`)
            overriding the layout's fields. A question field holding a chat list takes
            the last user message.
        dedup: drop rows whose whitespace-normalised question was already seen
            (first wins). Same question with different answers is an error either way.
        limit: keep only the first `limit` problems (after dedup); later rows are not read.

    Raises:
        UserError: missing/corrupt file, unknown layout, missing fields, ambiguous
            ground truth, clashing ids, an empty result, or an unloadable hub id.
    """
    try:
        layout_kind = Layout(layout)
    except ValueError:
        choices = ", ".join(item.value for item in Layout)
        raise UserError(f"{source}: unknown layout {layout!r}; use one of {choices}") from None
    if limit is not None and limit < 1:
        raise UserError(f"{source}: limit must be a positive integer, got {limit!r}")
    overrides = _Fields(question_field or "", answer_field or "", id_field)
    rows = _iter_rows(source, split=split)
    problems = _collect(source, rows, layout_kind, overrides, dedup=dedup, limit=limit)
    if not problems:
        raise UserError(f"{source}: no problems found (empty prompt set); check the file and split {split!r}")
    return problems


def _collect(
    source: str,
    rows: Iterator[tuple[str, dict]],
    layout: Layout,
    overrides: _Fields,
    *,
    dedup: bool,
    limit: int | None,
) -> list[Problem]:
    """Turn rows into problems, applying dedup, the ambiguity and id checks, and `limit`."""
    problems: list[Problem] = []
    by_question: dict[str, Problem] = {}
    by_id: dict[str, str] = {}
    fields: _Fields | None = None
    for where, row in rows:
        if fields is None:
            fields = _resolve_fields(source, row, layout, overrides)
        problem = _row_to_problem(source, where, row, fields)
        key = normalise_question(problem.question)
        first = by_question.get(key)
        if first is not None and normalise_question(first.answer) != normalise_question(problem.answer):
            raise UserError(
                f"{source}: question {first.id} appears with answers {first.answer!r} and "
                f"{problem.answer!r} ({where}); ambiguous ground truth — fix or drop one row"
            )
        if first is not None and dedup:
            continue
        seen_question = by_id.get(problem.id)
        if seen_question is not None and seen_question != key:
            raise UserError(
                f"{source}: id {problem.id!r} is used by two different questions ({where}); "
                "make ids unique or set id_field to another field"
            )
        by_question.setdefault(key, problem)
        by_id[problem.id] = key
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    return problems


def _resolve_fields(source: str, row: dict, layout: Layout, overrides: _Fields) -> _Fields:
    """Pick the question/answer/id paths from the layout (detected from `row` if auto)."""
    if layout is Layout.AUTO:
        layout = _detect_layout(source, row, overrides)
    if layout is Layout.VERL:
        defaults = _Fields(_VERL_QUESTION_FIELD, _VERL_ANSWER_FIELD, _VERL_ID_FIELD)
    else:
        question = next((name for name in _QA_QUESTION_FIELDS if name in row), "question")
        id_name = next((name for name in _QA_ID_FIELDS if name in row), None)
        defaults = _Fields(question, "answer", id_name)
    return _Fields(
        question=overrides.question or defaults.question,
        answer=overrides.answer or defaults.answer,
        id=overrides.id if overrides.id is not None else defaults.id,
    )


def _detect_layout(source: str, row: dict, overrides: _Fields) -> Layout:
    """`verl` when the row has a chat-list `prompt` and a `reward_model`, else `qa`."""
    if isinstance(row.get("prompt"), list) and "reward_model" in row:
        return Layout.VERL
    if overrides.question or any(name in row for name in _QA_QUESTION_FIELDS):
        return Layout.QA
    keys = ", ".join(sorted(row)) or "none"
    raise UserError(
        f"{source}: cannot detect the layout from the first row's fields ({keys}); "
        "set layout (qa or verl) or question_field=/answer_field="
    )


def _row_to_problem(source: str, where: str, row: dict, fields: _Fields) -> Problem:
    """Build one `Problem` from a row, naming the row and field when one is missing."""
    raw_question = _get_path(row, fields.question)
    if raw_question is _MISSING or raw_question is None:
        raise UserError(
            f"{source} {where}: no question field {fields.question!r}; "
            "set question_field= (e.g. --set <stage>.question_field=problem)"
        )
    question = _question_text(source, where, fields.question, raw_question)
    raw_answer = _get_path(row, fields.answer)
    if raw_answer is _MISSING or raw_answer is None or not str(raw_answer).strip():
        raise UserError(
            f"{source} {where}: no answer field {fields.answer!r}; "
            "set answer_field= (e.g. --set <stage>.answer_field=reward_model.ground_truth)"
        )
    if not isinstance(raw_answer, (str, int, float)) or isinstance(raw_answer, bool):
        raise UserError(
            f"{source} {where}: answer field {fields.answer!r} is a {type(raw_answer).__name__}, "
            "expected a string or number; point answer_field= at the scalar answer"
        )
    raw_id = _get_path(row, fields.id) if fields.id else _MISSING
    problem_id = question_hash_id(question) if raw_id in (_MISSING, None, "") else str(raw_id)
    used = {fields.question.split(".")[0], fields.answer.split(".")[0]}
    if fields.id:
        used.add(fields.id.split(".")[0])
    meta = {key: value for key, value in row.items() if key not in used and isinstance(value, _SCALARS)}
    return Problem(id=problem_id, question=question, answer=str(raw_answer).strip(), meta=meta)


def _get_path(row: dict, path: str) -> Any:
    """Follow a dotted path through nested dicts; `_MISSING` when any step is absent."""
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _question_text(source: str, where: str, name: str, value: Any) -> str:
    """A question string, or the last user message of a chat list (verl `prompt`)."""
    if isinstance(value, list):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else None
    if not isinstance(value, str) or not value.strip():
        raise UserError(
            f"{source} {where}: question field {name!r} is not a non-empty string or a chat "
            "list with a user message; set question_field= to the question text"
        )
    return value


# --- row readers: each yields (human-readable location, row dict) --------------------


def _iter_rows(source: str, *, split: str) -> Iterator[tuple[str, dict]]:
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
                yield f"line {lineno}", _parse_json_line(path, lineno, line)
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; re-save the file as UTF-8 JSON lines") from None


def _parse_json_line(path: Path, lineno: int, line: str) -> dict:
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


# --- writing and fingerprinting ------------------------------------------------------


def write_problems_jsonl(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems as JSON lines (`id`, `question`, `answer`, then meta), atomically.

    The file appears complete or not at all: rows go to a temp file in the same
    directory, which then replaces `path`. `load_problems(path)` reads it back
    unchanged (meta keys named id/question/answer are dropped).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for problem in problems:
                row = {"id": problem.id, "question": problem.question, "answer": problem.answer}
                row.update({k: v for k, v in problem.meta.items() if k not in row})
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def problem_set_fingerprint(problems: Iterable[Problem]) -> str:
    """sha256 hex over the (id, question, answer) triples in order; meta is ignored."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps([problem.id, problem.question, problem.answer]).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def stratified_subset(problems: list[Problem], *, flag: str, fraction: float, seed: int = 0) -> list[Problem]:
    """All problems whose `meta[flag]` is true, plus enough of the others (a seeded random
    choice, original order kept) that the flagged share is `fraction`. E.g. a training set
    where half of the prompts carry the testbed's planted flaw."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    flagged = [i for i, p in enumerate(problems) if p.meta.get(flag)]
    if not flagged:
        raise UserError(f"no problem has a true `{flag}` field; pick a boolean field the file has")
    others = [i for i, p in enumerate(problems) if not p.meta.get(flag)]
    want = min(len(others), round(len(flagged) * (1 - fraction) / fraction))
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = set(flagged) | set(rng.choice(others, size=want, replace=False).tolist())
    return [p for i, p in enumerate(problems) if i in keep]
