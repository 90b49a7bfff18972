"""One bank row = one explorer rollout: the record and its pyarrow schema, defined together."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyarrow as pa

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BankRecord:
    """One explorer response to one prompt.

    `sample_index` numbers the prompt's samples 0..M-1 (unique per prompt). `logprobs[t]`
    is the explorer's log-prob of `response_token_ids[t]` under the distribution it was
    sampled from (temperature, top-k/top-p applied: bank.json `logprobs: "sampling"`; banks
    without that key hold raw, temperature-1 log-probs), the behaviour policy off-policy
    corrections divide by. `response_token_ids` end with the stop token when `finish_reason`
    is "stop"; `response` is the text before it, other special tokens kept
    (pipeline.engines.stops). `reward`/`correct`/`extracted_answer` are the verifier's
    verdict, cached under the verifier version and `truncated_reward` recorded in bank.json.
    `response_length == len(response_token_ids)`.
    """

    prompt_id: str
    sample_index: int
    prompt: str
    prompt_token_ids: list[int]
    response: str
    response_token_ids: list[int]
    logprobs: list[float]
    reward: float
    correct: bool
    extracted_answer: str | None
    finish_reason: str
    response_length: int


BANK_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("prompt_token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("response_token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("extracted_answer", pa.string(), nullable=True),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("response_length", pa.int32(), nullable=False),
    ],
    metadata={"s2lpo.schema_version": str(SCHEMA_VERSION)},
)

assert [f.name for f in fields(BankRecord)] == BANK_SCHEMA.names, "record and schema must list the same fields"


def records_to_table(records: list[BankRecord]) -> pa.Table:
    """Column-wise conversion (fast: no per-row dicts)."""
    # getattr, not dataclasses.astuple: astuple deep-copies every token list (100× slower)
    columns = [[getattr(r, name) for r in records] for name in BANK_SCHEMA.names]
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, BANK_SCHEMA)],
                                schema=BANK_SCHEMA)


def table_to_records(table: pa.Table) -> list[BankRecord]:
    return [BankRecord(**row) for row in table.select(BANK_SCHEMA.names).to_pylist()]
