"""Digests of what stage 2 writes, for refactors that must not change a bit.

Trains the tests' tiny world (tests/stage2_train/conftest.py: a random 1-layer learner,
24 prompts, a hand-written half-right bank) under each configuration below and prints
the sha256 of the trained weights and of the metrics records (timings left out). Run it
before and after a change and diff the two outputs:

    python benchmarks/stage2_digests.py --out /tmp/before.json   # on the old commit
    python benchmarks/stage2_digests.py --out /tmp/after.json    # on the new one
    diff /tmp/before.json /tmp/after.json

Float kernels differ between CPUs, so digests compare only runs on one machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _conftest():
    spec = importlib.util.spec_from_file_location("stage2_conftest", ROOT / "tests/stage2_train/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configurations():
    """(name, changes, resume_from): `resume_from` steps run first, then the rest with --resume."""
    from stage2_train.config import AnnealConfig, LoraSettings, LossConfig
    from stage2_train.groups import BankPrompts, BankRows, Mixing
    from stage2_train.rl_math import Aggregation, BankCorrection, Baseline
    from stage2_train.schedule import Schedule

    grpo = AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.0)
    return [
        ("s2lpo-3-steps", {"steps": 3}, None),
        ("s2lpo-resumed-2+2", {"steps": 4}, 2),
        ("s2lpo-kl-4-steps", {"loss": LossConfig(kl_coef=0.001), "weight_decay": 0.0}, None),
        ("alternating", {"mixing": Mixing.ALTERNATING}, None),
        ("rescue-rewarded", {"bank_prompts": BankPrompts.RESCUE, "bank_rows": BankRows.REWARDED}, None),
        ("rescue-resumed-1+2", {"bank_prompts": BankPrompts.RESCUE, "steps": 3}, 1),
        ("online-baseline-tis", {"loss": LossConfig(baseline=Baseline.ONLINE, bank_correction=BankCorrection.TRUNCATED_IS,
                                                    kl_coef=0.0)}, None),
        ("luffy-drgrpo", {"loss": LossConfig(bank_correction=BankCorrection.LUFFY, normalize_std=False,
                                             aggregation=Aggregation.CONSTANT)}, None),
        ("seqmean-cliphigher-2-epochs", {"loss": LossConfig(aggregation=Aggregation.SEQUENCE_MEAN, clip_high=0.28),
                                         "ppo_epochs": 2, "mini_batch_size": 8, "micro_batch_size": 4}, None),
        ("grpo-noise", {"anneal": grpo, "temperature": 1.2}, None),
        ("grpo-no-bank", {"anneal": grpo, "bank": None}, None),
        ("band", {"bank_pass_band": (0.05, 0.95)}, None),
        ("grpo-band", {"anneal": grpo, "bank_pass_band": (0.05, 0.95)}, None),
        ("const50", {"anneal": AnnealConfig(schedule=Schedule.CONSTANT, initial_rate=0.5)}, None),
        ("lora", {"lora": LoraSettings(r=4, alpha=8), "weight_decay": 0.0}, None),
    ]


def digest_run(out: Path) -> dict:
    from stage2_train.metrics import read_jsonl

    model = out / "model"
    weights = sorted(model.glob("*.safetensors"))
    records = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(out / "metrics.jsonl")]
    return {"weights": {w.name: hashlib.sha256(w.read_bytes()).hexdigest()[:16] for w in weights},
            "metrics": hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the digests here as JSON")
    ap.add_argument("--only", action="append", default=[], help="just these configurations (repeatable)")
    args = ap.parse_args(argv)
    import torch

    from pipeline.testbed.tokenizer import build_char_tokenizer
    from stage2_train.trainer import run_train

    torch.set_num_threads(1)
    conf = _conftest()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        world = conf.build_train_world(Path(tmp) / "world", build_char_tokenizer())
        for name, changes, resume_from in configurations():
            if args.only and name not in args.only:
                continue
            out = Path(tmp) / name
            cfg = conf.tiny_config(world, out, **changes)
            quiet = {"echo": lambda *_: None, "progress": False}
            if resume_from:
                run_train(dataclasses.replace(cfg, steps=resume_from), **quiet)
                run_train(cfg, resume=True, **quiet)
            else:
                run_train(cfg, **quiet)
            results[name] = digest_run(out)
            print(f"{name:30s} {results[name]['metrics']}  " + " ".join(f"{k} {v}" for k, v in results[name]["weights"].items()),
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
