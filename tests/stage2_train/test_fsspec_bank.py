"""Stage 2 reads a bank from any fsspec URL: the same bank in fsspec's real `memory://`
filesystem (the stand-in for `hf://datasets/OWNER/NAME`) trains exactly as from disk."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest

from pipeline.bank.reader import BankReader
from pipeline.bank.store import BankWriter
from stage2_train.config import EvalSettings
from stage2_train.metrics import read_jsonl
from stage2_train.trainer import run_train

pytestmark = pytest.mark.slow


def _copy_bank(src: str, dst: str) -> None:
    reader = BankReader.open(src)
    writer = BankWriter(dst, reader.files.identity)
    writer.write_shard(reader.read(np.arange(reader.files.rows)))


def test_training_from_a_memory_url_bank_equals_training_from_disk(train_config, train_world, tmp_path):
    uri = "memory://s2lpo-test/bank"
    _copy_bank(str(train_world / "bank"), uri)
    try:
        runs = {}
        for name, bank in (("disk", str(train_world / "bank")), ("memory", uri)):
            cfg = train_config(out_dir=tmp_path / name, bank=bank, steps=2, eval=EvalSettings(problems=None))
            run_train(cfg, echo=lambda *_: None, progress=False)
            runs[name] = [{k: v for k, v in r.items() if not k.startswith("time/")}
                          for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
    finally:
        fsspec.filesystem("memory").rm("/s2lpo-test", recursive=True)
    assert [r["bank/responses"] for r in runs["memory"][1:]] == [24, 12]  # α = 1, then 2/3 of G = 4 from the bank
    assert runs["memory"] == runs["disk"]
