"""Problem loaders: one `Problem` record for every prompt set (training and benchmarks).

Every stage that reads math problems — the explorer building its bank, the learner's
GRPO loop, evaluation — goes through `load_problems`, so they all agree on what a
problem's id, question, system text and ground-truth answer are. Rows are read by
`pipeline.data_rows` (local `.jsonl` / `.json` / `.parquet`, a parquet directory, or a
hub dataset id).

Layouts (`Layout`):
- `qa`    — flat rows with `question` (or `problem`) and `answer` (AIME, MATH-500); the
  id is `id` (or `unique_id`); an optional top-level `system` string is the system text.
- `gsm8k` — GSM8K as published: `question`, and `answer` = the solution text ending in a
  line `#### N`; the gold answer is N with thousands commas removed (`#### 1,234` → `1234`).
- `verl`  — verl / LUFFY rows (DAPO-Math-17k, multi-benchmark validation files): `prompt` is
  a chat list whose last user message is the question and whose system message(s) are the
  system text, the answer is `reward_model.ground_truth`, the id is `extra_info.index`.
  A numeric index (verl's per-source row counter, which restarts at 0 for each
  `data_source`) is qualified by the row's `data_source`: id `aime/0`, `math500/0`, so a
  file holding several benchmarks loads; other indexes (DAPO's UUIDs) are kept as they are.
- `auto`  — chosen from the first row's keys: `verl` for a chat-list `prompt` with a
  `reward_model`, `gsm8k` for a `question` whose `answer` ends in `#### N`, else `qa`.

Invariants of the returned list:
- ids are unique: the id field stringified (qualified as above), else `question_hash_id(question)`;
- no two problems of one `data_source` (or of a file without one) share a
  whitespace-normalised question when `dedup=True` (the first row wins; DAPO-Math-17k
  repeats every prompt ~100 times); the same question under two sources is kept twice;
- a question that appears with two different answers (within a source) is an error,
  never a coin flip.
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

from pipeline.data_rows import iter_rows
from pipeline.errors import UserError

_MISSING = object()
_SCALARS = (str, int, float, bool, type(None))
_QA_QUESTION_FIELDS = ("question", "problem")
_QA_ID_FIELDS = ("id", "unique_id")
_VERL_QUESTION_FIELD = "prompt"
_VERL_ANSWER_FIELD = "reward_model.ground_truth"
_VERL_ID_FIELD = "extra_info.index"
_SOURCE_FIELD = "data_source"
_SYSTEM_FIELD = "system"
_GSM8K_FINAL = re.compile(r"(?:^|\n)####[ \t]*([^\n]*?)\s*$")  # the solution's last line, `#### N`


@dataclass(frozen=True)
class Problem:
    """One math problem.

    `meta` holds the row's other top-level scalar fields (e.g. `exam`, `level`,
    `flawed`, `data_source`). It is excluded from hashing so a `Problem` stays
    hashable; treat it as read-only. `system` is the row's system text (a verl chat
    list's system message, or a qa row's `system` field), rendered by
    `pipeline.prompts.render_problems` as the chat template's system turn.
    """

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict, hash=False)
    system: str | None = None


class Layout(str, enum.Enum):
    """How a row's question, answer and id are laid out (see the module docstring)."""

    AUTO = "auto"
    QA = "qa"
    VERL = "verl"
    GSM8K = "gsm8k"


@dataclass(frozen=True)
class _Fields:
    """Resolved dotted paths of the question, answer and (optional) id fields.

    `layout` is the resolved layout (never AUTO once resolved); `qualify_ids` is set for
    the verl layout's own id field, whose numeric indexes get the `data_source/` prefix.
    """

    question: str
    answer: str
    id: str | None
    layout: Layout = Layout.QA
    qualify_ids: bool = False


def normalise_question(question: str) -> str:
    """Collapse every whitespace run to one space and strip the ends (the dedup key)."""
    return " ".join(question.split())


def question_hash_id(question: str) -> str:
    """Stable id for a problem without one: first 16 hex of sha1(normalised question)."""
    return hashlib.sha1(normalise_question(question).encode("utf-8")).hexdigest()[:16]


def gsm8k_gold(solution: str) -> str | None:
    """N from a GSM8K solution ending in the line `#### N`, commas removed; None without one."""
    match = _GSM8K_FINAL.search(solution)
    gold = match.group(1).replace(",", "").strip() if match else ""
    return gold or None


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
        layout: `auto`, `qa`, `verl` or `gsm8k` (see `Layout`).
        question_field / answer_field / id_field: dotted paths (`reward_model.ground_truth`)
            overriding the layout's fields. A question field holding a chat list takes
            the last user message (and its system messages as the system text). An id
            field of `""` gives every problem its question-hash id; an explicit id field
            is used verbatim (no `data_source/` prefix).
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
    rows = iter_rows(source, split=split)
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
        key = _dedup_key(problem)
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
                f"{source}: id {problem.id!r} is used by two different questions ({where}); make the ids "
                "unique, or set id_field to a unique field (--set id_field=FIELD; --set id_field= hashes the question)"
            )
        by_question.setdefault(key, problem)
        by_id[problem.id] = key
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    return problems


def _dedup_key(problem: Problem) -> str:
    """The normalised question, within its `data_source` when the row names one (a question
    that two benchmarks of one validation file share stays in both)."""
    data_source = problem.meta.get(_SOURCE_FIELD)
    prefix = f"{data_source}\x00" if isinstance(data_source, str) and data_source else ""
    return prefix + normalise_question(problem.question)


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
        layout=layout,
        qualify_ids=layout is Layout.VERL and overrides.id is None,
    )


def _detect_layout(source: str, row: dict, overrides: _Fields) -> Layout:
    """`verl` for a chat-list `prompt` with a `reward_model`; `gsm8k` for an answer ending
    in `#### N` (unless answer_field is set); else `qa`."""
    if isinstance(row.get("prompt"), list) and "reward_model" in row:
        return Layout.VERL
    answer = row.get("answer")
    if not overrides.answer and "question" in row and isinstance(answer, str) and gsm8k_gold(answer):
        return Layout.GSM8K
    if overrides.question or any(name in row for name in _QA_QUESTION_FIELDS):
        return Layout.QA
    keys = ", ".join(sorted(row)) or "none"
    raise UserError(
        f"{source}: cannot detect the layout from the first row's fields ({keys}); "
        "set layout (qa, gsm8k or verl) or question_field=/answer_field="
    )


def _row_to_problem(source: str, where: str, row: dict, fields: _Fields) -> Problem:
    """Build one `Problem` from a row, naming the row and field when one is missing."""
    raw_question = _get_path(row, fields.question)
    if raw_question is _MISSING or raw_question is None:
        raise UserError(
            f"{source} {where}: no question field {fields.question!r}; "
            "set question_field (e.g. --set question_field=problem)"
        )
    question, system = _question_text(source, where, fields.question, raw_question)
    if system is None and isinstance(row.get(_SYSTEM_FIELD), str) and row[_SYSTEM_FIELD].strip():
        system = row[_SYSTEM_FIELD]
    answer = _answer_text(source, where, fields, _get_path(row, fields.answer))
    used = {fields.question.split(".")[0], fields.answer.split(".")[0], _SYSTEM_FIELD}
    if fields.id:
        used.add(fields.id.split(".")[0])
    meta = {key: value for key, value in row.items() if key not in used and isinstance(value, _SCALARS)}
    return Problem(id=_problem_id(row, fields, question), question=question, answer=answer, meta=meta, system=system)


def _answer_text(source: str, where: str, fields: _Fields, raw_answer: Any) -> str:
    """The gold answer as a stripped string (for `gsm8k`, the N of `#### N`)."""
    if raw_answer is _MISSING or raw_answer is None or not str(raw_answer).strip():
        raise UserError(
            f"{source} {where}: no answer field {fields.answer!r}; "
            "set answer_field (e.g. --set answer_field=reward_model.ground_truth)"
        )
    if not isinstance(raw_answer, (str, int, float)) or isinstance(raw_answer, bool):
        raise UserError(
            f"{source} {where}: answer field {fields.answer!r} is a {type(raw_answer).__name__}, "
            "expected a string or number; point answer_field at the scalar answer"
        )
    if fields.layout is not Layout.GSM8K:
        return str(raw_answer).strip()
    gold = gsm8k_gold(str(raw_answer))
    if gold is None:
        raise UserError(
            f"{source} {where}: answer field {fields.answer!r} does not end in a '#### N' line (layout gsm8k); "
            "fix the row, or --set layout=qa to keep the whole solution as the answer"
        )
    return gold


def _problem_id(row: dict, fields: _Fields, question: str) -> str:
    """The id field stringified — `data_source/index` for a verl row's numeric index — else
    the question's hash id."""
    raw_id = _get_path(row, fields.id) if fields.id else _MISSING
    if raw_id is _MISSING or raw_id is None or raw_id == "":
        return question_hash_id(question)
    data_source = row.get(_SOURCE_FIELD)
    counter = (isinstance(raw_id, int) and not isinstance(raw_id, bool)) or (isinstance(raw_id, str) and raw_id.isdigit())
    if fields.qualify_ids and counter and isinstance(data_source, str) and data_source:
        return f"{data_source}/{raw_id}"
    return str(raw_id)


def _get_path(row: dict, path: str) -> Any:
    """Follow a dotted path through nested dicts; `_MISSING` when any step is absent."""
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _question_text(source: str, where: str, name: str, value: Any) -> tuple[str, str | None]:
    """(question, system): a question string, or the last user message of a chat list
    (verl `prompt`) with its system messages joined by a blank line (None without one)."""
    system = None
    if isinstance(value, list):
        messages = [m for m in value if isinstance(m, dict)]
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        systems = [m["content"] for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str)]
        system = "\n\n".join(s for s in systems if s.strip()) or None
        value = users[-1] if users else None
    if not isinstance(value, str) or not value.strip():
        raise UserError(
            f"{source} {where}: question field {name!r} is not a non-empty string or a chat "
            "list with a user message; set question_field to the question text"
        )
    return value, system


# --- writing and fingerprinting ------------------------------------------------------


def write_problems_jsonl(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems as JSON lines (`id`, `question`, `answer`, `system` when set, then meta), atomically.

    The file appears complete or not at all: rows go to a temp file in the same
    directory, which then replaces `path`. `load_problems(path)` reads it back
    unchanged (meta keys named id/question/answer/system are dropped).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for problem in problems:
                row = {"id": problem.id, "question": problem.question, "answer": problem.answer}
                if problem.system is not None:
                    row[_SYSTEM_FIELD] = problem.system
                row.update({k: v for k, v in problem.meta.items() if k not in row})
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def problem_set_fingerprint(problems: Iterable[Problem]) -> str:
    """sha256 hex over the (id, question, answer[, system]) tuples in order; meta is ignored.

    The system text enters only when a problem has one, so sets without system text keep
    the fingerprints they always had."""
    digest = hashlib.sha256()
    for problem in problems:
        item = [problem.id, problem.question, problem.answer] + ([problem.system] if problem.system is not None else [])
        digest.update(json.dumps(item).encode("utf-8"))
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
