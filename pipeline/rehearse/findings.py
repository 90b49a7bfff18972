"""What a rehearsal looks at in the bank it made: how responses ended, what they contain,
and whether the learner sees the same prompt ids as the explorer did.

`response_findings` is pure (token ids and the tokenizer's id sets in, counts out), so the
checks are tested on hand-built rows; `bank_findings` reads the bank's shards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class ResponseFindings:
    """Counts over the bank's responses."""

    rows: int
    finish: dict[str, int]  # finish_reason → rows
    ended_by: dict[str, int]  # "151645 <|im_end|>" → rows whose response ended on that stop id; "none" otherwise
    truncated_share: float
    empty_text: int  # rows whose decoded response (what the verifier sees) is empty
    stop_only: int  # rows that are nothing but a stop token
    specials_inside: dict[str, int] = field(default_factory=dict)  # special tokens before the end → occurrences
    mean_length: float = 0.0


def response_findings(rows: Sequence[dict[str, Any]], *, stop_ids: Sequence[int], special_ids: dict[int, str]
                      ) -> ResponseFindings:
    """`rows`: bank rows with `response_token_ids`, `response` and `finish_reason`.

    A response "ended by" stop id s when s is its last token; specials inside are special
    tokens anywhere before that last token (a random model emits `<|im_start|>`,
    `<tool_call>`, image pads …; a trained one should not).
    """
    stops = set(int(s) for s in stop_ids)
    finish, ended, inside = Counter(), Counter(), Counter()
    empty = stop_only = total_len = 0
    for row in rows:
        ids = list(row["response_token_ids"])
        finish[row["finish_reason"]] += 1
        last = ids[-1] if ids else None
        ended[f"{last} {special_ids.get(last, '?')}" if last in stops else "none"] += 1
        body = ids[:-1] if last in stops else ids
        inside.update(special_ids[t] for t in body if t in special_ids)
        empty += not row["response"].strip()
        stop_only += len(ids) == 1 and last in stops
        total_len += len(ids)
    n = len(rows)
    return ResponseFindings(rows=n, finish=dict(finish), ended_by=dict(ended),
                            truncated_share=finish.get("length", 0) / n if n else 0.0, empty_text=empty,
                            stop_only=stop_only, specials_inside=dict(inside.most_common(8)),
                            mean_length=total_len / n if n else 0.0)


def prompt_id_mismatches(rows: Sequence[dict[str, Any]], learner_ids: Sequence[Sequence[int]]) -> list[str]:
    """prompt_ids of the rows whose stored prompt ids differ from the learner's tokenisation."""
    return sorted({r["prompt_id"] for r, mine in zip(rows, learner_ids) if list(r["prompt_token_ids"]) != list(mine)})


def read_bank_rows(uri: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Every row of a bank's complete shards (a rehearsal's bank is small)."""
    import pyarrow.parquet as pq

    from pipeline.bank.store import open_bank

    files = open_bank(uri)
    rows: list[dict[str, Any]] = []
    for shard in files.shards:
        with files.location.fs.open_input_file(files.location.path(shard.file)) as fh:
            rows.extend(pq.read_table(fh, columns=list(columns)).to_pylist())
    return rows


def special_token_names(tokenizer) -> dict[int, str]:
    """id → text of every special or added-special token of the tokenizer."""
    names = {int(i): t for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)}
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            names[int(i)] = str(tok)
    return names


def ids_preview(ids: Sequence[int], head: int = 12, tail: int = 12) -> str:
    ids = list(ids)
    if len(ids) <= head + tail:
        return " ".join(map(str, ids))
    return f"{' '.join(map(str, ids[:head]))} … {' '.join(map(str, ids[-tail:]))}  ({len(ids)} ids)"


def text_preview(text: str, head: int = 160, tail: int = 160) -> str:
    shown = text if len(text) <= head + tail else f"{text[:head]} … {text[-tail:]}"
    return shown.encode("unicode_escape").decode("ascii")
