"""The authors' rollout format: `s2lpo bank import` and `s2lpo bank export --format authors-jsonl`.

The authors' released code keeps explorer rollouts as JSONL, one record per response:

    {"prompt_id": …, "prompt": "<rendered prompt>", "prompt_ids": [...], "response": "…",
     "response_ids": [...], "logprobs": [...], "reward": 0 | 1}

`logprobs[t]` is the explorer's log-prob of `response_ids[t]`; `reward` is the 0/1 verdict
their loose string matcher cached. Other names accepted on import are in `FIELDS` (the
first name of each is what export writes). `sample_index` and `finish_reason` are
optional: without them samples are numbered 0.. per prompt in file order, and a response
of `max_new_tokens` tokens or more counts as truncated (`length`), any other as `stop`.

Import re-scores every response with this repository's verifier against the gold answers
of the prompt set (`--prompts`, matched on `prompt_id`: a record carries no gold), so the
bank's rewards mean what `s2lpo explore`'s mean; `bank.json`'s identity records that it
did (`imported.rescored`) and how many cached rewards changed. It reads the file twice:
first it checks every record and scores it, then it writes the shards, so a bad record
is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.bank.schema import SCHEMA_VERSION, BankRecord, records_to_table
from pipeline.bank.store import IDENTITY_FILE, BankWriter, open_bank
from pipeline.data import Problem, problem_set_fingerprint
from pipeline.errors import UserError
from pipeline.fs import exists, resolve

FORMAT = "authors-jsonl"
# bank field: the names a record may use for it (export writes the first)
FIELDS = {
    "prompt_id": ("prompt_id", "uid", "id"),
    "prompt": ("prompt",),
    "prompt_token_ids": ("prompt_ids", "prompt_token_ids"),
    "response": ("response",),
    "response_token_ids": ("response_ids", "response_token_ids"),
    "logprobs": ("logprobs", "log_probs", "response_logprobs", "old_log_probs"),
    "reward": ("reward", "score"),
}
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class AuthorsRecord:
    """One record of the authors' file, checked (`sample_index` None when not given)."""

    prompt_id: str
    prompt: str
    prompt_token_ids: list[int]
    response: str
    response_token_ids: list[int]
    logprobs: list[float]
    reward: float
    sample_index: int | None
    finish_reason: str | None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line."""
    from pipeline.data_rows import parse_json_line

    try:
        with path.open() as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield lineno, parse_json_line(path, lineno, line)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc}); give an existing JSONL file") from None


def parse_record(where: str, raw: dict) -> AuthorsRecord:
    """Check one record's fields and types; `where` is `file:line` for the message."""
    values = {}
    for name, aliases in FIELDS.items():
        found = [a for a in aliases if a in raw]
        if not found:
            raise UserError(f"{where}: no `{aliases[0]}` field (accepted names: {', '.join(aliases)})")
        values[name] = raw[found[0]]
    pid = values["prompt_id"]
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise UserError(f"{where}: prompt_id must be a string or an integer, got {pid!r}")
    for name in ("prompt", "response"):
        if not isinstance(values[name], str):
            raise UserError(f"{where}: `{name}` must be a string")
    for name in ("prompt_token_ids", "response_token_ids"):
        ids = values[name]
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
            raise UserError(f"{where}: `{FIELDS[name][0]}` must be a list of non-negative token ids")
    lps = values["logprobs"]
    if not isinstance(lps, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and math.isfinite(v) and v <= 0 for v in lps):
        raise UserError(f"{where}: `logprobs` must be a list of finite log-probs (<= 0)")
    if len(lps) != len(values["response_token_ids"]):
        raise UserError(f"{where}: {len(lps)} log-probs for {len(values['response_token_ids'])} response ids; "
                        "the file must hold one log-prob per response token")
    reward = values["reward"]
    if not isinstance(reward, (int, float)) or not math.isfinite(float(reward)):
        raise UserError(f"{where}: `reward` must be a number, got {reward!r}")
    sample_index = raw.get("sample_index")
    if sample_index is not None and (not isinstance(sample_index, int) or sample_index < 0):
        raise UserError(f"{where}: `sample_index` must be a non-negative integer, got {sample_index!r}")
    finish = raw.get("finish_reason")
    if finish is not None and finish not in FINISH_REASONS:
        raise UserError(f"{where}: `finish_reason` {finish!r} is not one of {', '.join(FINISH_REASONS)}")
    return AuthorsRecord(str(pid), values["prompt"], values["prompt_token_ids"], values["response"],
                         values["response_token_ids"], [float(v) for v in lps], float(reward), sample_index, finish)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _records(path: Path) -> Iterator[tuple[str, AuthorsRecord, int]]:
    """(where, record, sample index) in file order; indices numbered per prompt when absent."""
    seen: dict[str, set[int]] = defaultdict(set)
    for lineno, raw in iter_jsonl(path):
        where = f"{path}:{lineno}"
        rec = parse_record(where, raw)
        index = rec.sample_index if rec.sample_index is not None else len(seen[rec.prompt_id])
        if index in seen[rec.prompt_id]:
            raise UserError(f"{where}: prompt {rec.prompt_id!r} has sample {index} twice; "
                            "each (prompt_id, sample_index) must be unique")
        seen[rec.prompt_id].add(index)
        yield where, rec, index


def _finish_reason(rec: AuthorsRecord, max_new_tokens: int | None) -> str:
    if rec.finish_reason is not None:
        return rec.finish_reason
    return "length" if max_new_tokens and len(rec.response_token_ids) >= max_new_tokens else "stop"


def _check_prompt_ids(where: str, rec: AuthorsRecord, problem: Problem, tokenizer, template: str) -> None:
    """The record's prompt ids must be the question rendered as stage 2 renders it."""
    from pipeline.prompts import render_prompt

    mine = tokenizer(render_prompt(tokenizer, problem.question, template=template),
                     add_special_tokens=True)["input_ids"]
    if list(mine) != rec.prompt_token_ids:
        raise UserError(f"{where}: prompt_ids differ from prompt {rec.prompt_id!r}'s question rendered with "
                        f"template {template!r} and this tokenizer; pass --template the explorer used")


def _check_and_score(path: Path, gold: dict[str, Problem], tokenizer, template: str, pool):
    """Pass 1 over the file: check every record and score its response against the gold.
    Returns (scores, cached rewards, {prompt_id: (where first seen, prompt ids)})."""
    scores, cached = [], []
    checked: dict[str, tuple[str, list[int]]] = {}
    batch: list[tuple[str, str]] = []
    for where, rec, _ in _records(path):
        if rec.prompt_id not in gold:
            raise UserError(f"{where}: prompt_id {rec.prompt_id!r} is not in the --prompts file; "
                            "give the prompt set the explorer ran on")
        first = checked.get(rec.prompt_id)
        if first is None:
            _check_prompt_ids(where, rec, gold[rec.prompt_id], tokenizer, template)
            checked[rec.prompt_id] = (where, rec.prompt_token_ids)
        elif first[1] != rec.prompt_token_ids:
            raise UserError(f"{where}: prompt_ids differ from those of {first[0]} (the same prompt_id); "
                            "every response of a prompt must share its prompt ids")
        batch.append((rec.response, gold[rec.prompt_id].answer))
        cached.append(rec.reward)
        if len(batch) >= 1024:
            scores += pool.score(*zip(*batch))
            batch = []
    if batch:
        scores += pool.score(*zip(*batch))
    return scores, cached, checked


def import_authors_jsonl(source: str | Path, out: str, *, problems: list[Problem], tokenizer, template: str,
                         explorer: str, revision: str | None = None, sampling: dict | None = None,
                         scoring_workers: int = 2, score_timeout_s: float = 10.0,
                         rows_per_shard: int = 8192, echo=print) -> dict:
    """Turn the authors' JSONL at `source` into a new bank at `out`, re-scored; returns the
    import summary that `bank.json`'s identity also holds under `imported`."""
    from pipeline.models import tokenizer_fingerprint
    from pipeline.prompts import template_fingerprint
    from pipeline.scoring_pool import ScoringPool
    from pipeline.verifier import VERIFIER_NAME, VERIFIER_VERSION

    path = Path(source)
    gold = {p.id: p for p in problems}
    sampling = dict(sampling or {})
    if exists(resolve(out), IDENTITY_FILE):
        raise UserError(f"{out}: already a bank; import into a new --out path")
    with ScoringPool(scoring_workers, timeout_s=score_timeout_s) as pool:
        scores, cached, checked = _check_and_score(path, gold, tokenizer, template, pool)
    if not scores:
        raise UserError(f"{path}: no records; give a file with one JSON record per line")
    used = [p for p in problems if p.id in checked]
    summary = {"format": FORMAT, "file": path.name, "sha256": _file_sha256(path), "rows": len(scores),
               "prompts": len(used), "rescored": True, "rescored_with": VERIFIER_VERSION,
               "rewards_changed": sum(c != s.reward for c, s in zip(cached, scores)),
               "cached_correct": sum(c > 0 for c in cached), "correct": sum(s.correct for s in scores)}
    identity = {
        "schema_version": SCHEMA_VERSION,
        "explorer": {"model": explorer, "revision": revision or "unknown"},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "prompts": {"fingerprint": problem_set_fingerprint(used), "count": len(used)},
        "template": {"text": template, "fingerprint": template_fingerprint(tokenizer, template)},
        "sampling": sampling,
        "verifier": {"name": VERIFIER_NAME, "version": VERIFIER_VERSION},
        "imported": summary,
    }
    writer = BankWriter(out, identity)
    rows: list[BankRecord] = []
    for k, (_, rec, index) in enumerate(_records(path)):
        sc = scores[k]
        rows.append(BankRecord(rec.prompt_id, index, rec.prompt, rec.prompt_token_ids, rec.response,
                               rec.response_token_ids, rec.logprobs, sc.reward, sc.correct, sc.extracted,
                               _finish_reason(rec, sampling.get("max_new_tokens")), len(rec.response_token_ids)))
        if len(rows) >= rows_per_shard:
            writer.write_shard(records_to_table(rows))
            rows = []
    if rows:
        writer.write_shard(records_to_table(rows))
    echo(f"{out}: imported {summary['rows']} rows of {summary['prompts']} prompts from {path.name}; re-scored with "
         f"{VERIFIER_VERSION}: {summary['rewards_changed']} cached rewards changed "
         f"({summary['cached_correct']} → {summary['correct']} correct)")
    return summary


def export_rows(table) -> Iterator[dict]:
    """The authors' records of a table of bank rows (extra keys: sample_index, finish_reason)."""
    for row in table.to_pylist():
        reward = row["reward"]
        yield {"prompt_id": row["prompt_id"], "sample_index": row["sample_index"], "prompt": row["prompt"],
               "prompt_ids": row["prompt_token_ids"], "response": row["response"],
               "response_ids": row["response_token_ids"], "logprobs": row["logprobs"],
               "reward": int(reward) if reward in (0.0, 1.0) else reward, "finish_reason": row["finish_reason"]}


def export_authors_jsonl(bank: str, out: str | Path) -> dict:
    """Write every row of `bank` (shard order) as the authors' JSONL at `out`, atomically."""
    import pyarrow.parquet as pq

    files = open_bank(bank)
    out = Path(out)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    rows = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as fh:
            for shard in files.shards:
                with files.location.fs.open_input_file(files.location.path(shard.file)) as stream:
                    for record in export_rows(pq.read_table(stream)):
                        fh.write(json.dumps(record) + "\n")
                        rows += 1
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{out}: cannot write the export ({exc.strerror or exc}); choose a writable --out") from None
    return {"rows": rows, "shards": len(files.shards), "out": str(out)}
