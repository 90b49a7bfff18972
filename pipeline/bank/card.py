"""`s2lpo bank card`: the dataset card that makes a bank folder a Hugging Face Hub dataset.

The card is the bank's `README.md`: a YAML header the Hub and `datasets.load_dataset`
read — `configs` whose `data_files` are exactly the shards the manifests name (so an
orphaned or temporary shard is never loaded), `dataset_info.features` from the bank's
pyarrow schema, a licence placeholder, tags — and a body that lists the bank's identity
(explorer, tokenizer, template, sampling, verifier, and any field bank.json gains) as a
table, flattened generically, plus bank.json's identity verbatim. Uploading the folder
(`huggingface-cli upload OWNER/NAME BANK . --repo-type dataset`) then gives a dataset
that `load_dataset("OWNER/NAME")` opens and that `BankReader` and stage 2 read as
`hf://datasets/OWNER/NAME`.
"""

from __future__ import annotations

import json

import pyarrow as pa
import yaml

from pipeline.bank.schema import BANK_SCHEMA
from pipeline.bank.store import BankFiles, fingerprint
from pipeline.fs import atomic_write

CARD_FILE = "README.md"
LICENSE_PLACEHOLDER = "other"


def feature_yaml(field: pa.Field) -> dict:
    """One `dataset_info.features` entry: `dtype` for a scalar, `list` for a list of scalars."""
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"name": field.name, "list": str(t.value_type)}
    return {"name": field.name, "dtype": str(t)}


def flatten(identity: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every leaf of a nested dict, keys in their order."""
    rows: list[tuple[str, object]] = []
    for key, value in identity.items():
        if isinstance(value, dict) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def card_header(files: BankFiles, *, license: str = LICENSE_PLACEHOLDER, pretty_name: str | None = None) -> dict:
    shards = [s.file for s in files.shards]
    header = {
        "license": license,
        "pretty_name": pretty_name or f"s2lpo rollout bank {fingerprint(files.identity)}",
        "tags": ["s2lpo", "rollouts", "reinforcement-learning"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": shards}]}],
        "dataset_info": {"features": [feature_yaml(f) for f in BANK_SCHEMA]},
        "s2lpo_bank": {"fingerprint": fingerprint(files.identity), "rows": files.rows, "shards": len(shards),
                       "identity": files.identity},
    }
    return header


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return str(text).replace("|", "\\|").replace("\n", " ")


def card_text(files: BankFiles, *, license: str = LICENSE_PLACEHOLDER, pretty_name: str | None = None) -> str:
    """The whole README.md: YAML header, then the identity table and bank.json's identity."""
    header = card_header(files, license=license, pretty_name=pretty_name)
    fp = header["s2lpo_bank"]["fingerprint"]
    table = "\n".join(f"| `{k}` | {_cell(v)} |" for k, v in flatten(files.identity))
    licence_note = ("**Licence: placeholder.** Set `license:` in the header to the licence of the prompts and of "
                    "the explorer's outputs before uploading." if license == LICENSE_PLACEHOLDER else
                    f"Licence: `{license}`.")
    body = f"""# {header['pretty_name']}

Explorer rollouts with cached rewards for S2L-PO (Small-to-Large Policy Optimization), written by
`s2lpo explore` (or `s2lpo bank import`): {files.rows} rows in {len(files.shards)} Parquet shards,
one row per explorer response (schema: `pipeline/bank/schema.py`). Bank fingerprint `{fp}`.

{licence_note}

## Use

```python
from datasets import load_dataset
rows = load_dataset("OWNER/NAME", split="train")        # or a local copy of this folder
```

```bash
s2lpo train --set bank=hf://datasets/OWNER/NAME          # stage 2 reads the bank in place
s2lpo bank info hf://datasets/OWNER/NAME
```

## Identity (bank.json)

Stage 2 refuses a bank whose tokenizer or template differ from the learner's.

| field | value |
|---|---|
{table}

```json
{json.dumps(files.identity, indent=2, sort_keys=True)}
```
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def write_card(files: BankFiles, *, license: str = LICENSE_PLACEHOLDER, pretty_name: str | None = None) -> str:
    """Write README.md into the bank (atomically, on the bank's filesystem); returns its path."""
    text = card_text(files, license=license, pretty_name=pretty_name).encode()
    atomic_write(files.location, CARD_FILE, lambda stream: stream.write(text))
    return files.location.path(CARD_FILE)
