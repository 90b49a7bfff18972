"""Every mistake a user can make ends the same way (README, "Commands"): one line on stderr
starting with `error:` that names the input, exit status 2, and nothing written.

One table, run through the real CLI (typer's CliRunner): params files and keys, prompt
files, model directories, banks (other tokenizer or template, corrupt, truncated or
missing shards, manifests that disagree with their shards, no training prompt), run
directories and pass@k settings. Each case builds its bad input under `tmp_path`; the
test snapshots every file there and in the shared world before the command and checks
that the command changed none of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@dataclass(frozen=True)
class World:
    root: Path
    prompts: Path  # the tiny family's 40 testbed prompts
    model: Path  # the tiny explorer, also the learner (one tokenizer)
    bank: Path  # a real explore of its first 4 prompts × 2 samples


@pytest.fixture(scope="module")
def world(tiny_family, tmp_path_factory) -> World:
    from stage1_explore.config import EngineKind, ExploreConfig
    from stage1_explore.explore import run_explore

    root = tmp_path_factory.mktemp("bad_input")
    bank = root / "bank"
    run_explore(ExploreConfig(prompts=str(tiny_family / "train.jsonl"), explorer=str(tiny_family / "explorer"),
                              bank=str(bank), limit=4, samples_per_prompt=2, max_new_tokens=6, prompts_per_shard=2,
                              engine=EngineKind.HF, scoring_workers=0), echo=lambda *_: None)
    return World(root, tiny_family / "train.jsonl", tiny_family / "explorer", bank)


# --- building bad inputs (each returns the path it made) ------------------------------


def _text(name: str, text: str) -> Callable[[World, Path], Path]:
    def make(w: World, tmp: Path) -> Path:
        (tmp / name).write_text(text)
        return tmp / name

    return make


def _model_copy(w: World, tmp: Path, edit: Callable[[Path], None]) -> Path:
    out = tmp / "model"
    shutil.copytree(w.model, out)
    edit(out)
    return out


def _pickle_only(w: World, tmp: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    def edit(d: Path) -> None:
        torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
        (d / "model.safetensors").unlink()

    return _model_copy(w, tmp, edit)


def _other_tokenizer(w: World, tmp: Path) -> Path:
    from transformers import AutoTokenizer

    def edit(d: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(d))
        tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        tok.save_pretrained(str(d))

    return _model_copy(w, tmp, edit)


def _custom_code(d: Path) -> None:
    """A model class in the directory's own Python file (it would leave a marker if it ran)."""
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="s2lpo-custom", auto_map={"AutoConfig": "custom.Config",
                                                       "AutoModelForCausalLM": "custom.Model"})
    (d / "config.json").write_text(json.dumps(config))
    (d / "custom.py").write_text(f"open({str(d / 'code-ran')!r}, 'w').close()\n")


def _bank_copy(w: World, tmp: Path, edit: Callable[[Path], None]) -> Path:
    out = tmp / "bank"
    shutil.copytree(w.bank, out)
    edit(out)
    return out


def _first_shard(bank: Path) -> Path:
    return sorted((bank / "shards").glob("*.parquet"))[0]


def _manifest(bank: Path) -> Path:
    return bank / "manifests" / "worker-0of1.json"


def _edit_manifest(bank: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(_manifest(bank).read_text())
    change(data)
    _manifest(bank).write_text(json.dumps(data))


BANK_EDITS: dict[str, Callable[[Path], None]] = {
    "corrupt": lambda b: _first_shard(b).write_bytes(b"PAR1" + b"\x00garbage" * 64 + b"PAR1"),
    "truncated": lambda b: _first_shard(b).write_bytes(_first_shard(b).read_bytes()[: _first_shard(b).stat().st_size // 2]),
    "rows": lambda b: _edit_manifest(b, lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1)),
    "missing": lambda b: _first_shard(b).unlink(),
    "json": lambda b: (b / "bank.json").write_text('{"schema_version": 1, "identity": '),
}


def _other_prompts(w: World, tmp: Path) -> Path:
    lines = w.prompts.read_text().splitlines()[10:14]  # the bank holds p000..p003 only
    (tmp / "other.jsonl").write_text("\n".join(lines) + "\n")
    return tmp / "other.jsonl"


def _run_dir(w: World, tmp: Path) -> Path:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.json").write_text("{}")
    return tmp / "run"


# --- the commands ---------------------------------------------------------------------


def _sets(pairs: dict) -> list[str]:
    return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def explore(w: World, tmp: Path, **over) -> list[str]:
    base = {"prompts": w.prompts, "explorer": w.model, "bank": tmp / "newbank", "limit": 3,
            "samples_per_prompt": 2, "max_new_tokens": 6, "engine": "hf", "scoring_workers": 0}
    return ["explore", *_sets({**base, **over})]


def train(w: World, tmp: Path, **over) -> list[str]:
    base = {"prompts": w.prompts, "limit": 4, "learner": w.model, "bank": w.bank, "out_dir": tmp / "out",
            "steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 6, "eval.every": 0,
            "eval.problems": "null", "tensorboard": "false"}
    return ["train", "--no-progress", *_sets({**base, **over})]


def evaluate(w: World, tmp: Path, **over) -> list[str]:
    base = {"model": w.model, "benchmarks.testbed": w.prompts, "limit": 2, "samples": 4, "out_dir": tmp / "out"}
    return ["evaluate", "--no-progress", *_sets({**base, **over})]


def params_file(text: str, stage: str = "explore"):
    def args(w: World, tmp: Path) -> list[str]:
        (tmp / "params.yaml").write_text(text)
        return [stage, "--params", str(tmp / "params.yaml")]

    return args


# (command builder, needle: the line must contain it; "{p}" is the bad path the case made)
CASES = {
    # params files, keys and types
    "params-file-missing": (lambda w, t: ["explore", "--params", str(t / "nope.yaml")],
                            "nope.yaml: params file not found"),
    "params-not-yaml": (params_file("explore:\n  samples_per_prompt: [1,\n"), "params.yaml (line 3): not valid YAML"),
    "params-section-not-mapping": (params_file("train: 3\n", "train"), "section 'train' must be a mapping"),
    "params-unknown-key": (lambda w, t: explore(w, t, samples=3), "explore.samples: unknown key; valid keys are"),
    "params-unknown-nested-key": (lambda w, t: train(w, t, **{"loss.klcoef": 0.1}), "train.loss.klcoef: unknown key"),
    "params-wrong-type": (lambda w, t: explore(w, t, samples_per_prompt="many"),
                          "explore.samples_per_prompt: expected int, got str ('many')"),
    "params-wrong-enum": (lambda w, t: train(w, t, **{"loss.baseline": "median"}),
                          "train.loss.baseline: 'median' is not one of 'group', 'online'"),
    "params-invalid-value": (lambda w, t: explore(w, t, samples_per_prompt=0), "samples_per_prompt must be ≥ 1"),
    "params-renamed-key": (lambda w, t: train(w, t, batch_size=64),
                           "train.batch_size: renamed to generate_batch_size (same meaning); set that key instead"),
    "params-file-renamed-key": (params_file("evaluate:\n  batch_size: 8\n", "evaluate"),
                                "evaluate.batch_size: renamed to generate_batch_size"),
    "params-set-without-value": (lambda w, t: ["explore", "--set", "samples_per_prompt"], "--set 'samples_per_prompt': "
                                 "expected KEY=VALUE"),
    # prompt files
    "prompts-missing": (lambda w, t: explore(w, t, prompts=t / "missing.jsonl"), "missing.jsonl: file not found"),
    "prompts-empty": (lambda w, t: explore(w, t, prompts=_text("empty.jsonl", "\n")(w, t)),
                      "empty.jsonl: no problems found"),
    "prompts-not-json": (lambda w, t: explore(w, t, prompts=_text("p.jsonl", '{"question": "1+1", "answer": "2"}\n'
                                                                 '{"question": "1+2", \n')(w, t)),
                         "p.jsonl:2: not valid JSON"),
    "prompts-without-answer": (lambda w, t: train(w, t, prompts=_text("p.jsonl", '{"question": "1+1"}\n')(w, t)),
                               "p.jsonl line 1: no answer field 'answer'"),
    "prompts-duplicate-ids": (lambda w, t: explore(w, t, prompts=_text("p.jsonl", '{"id": "a", "question": "1+1", '
                                                                      '"answer": "2"}\n{"id": "a", "question": "1+2", '
                                                                      '"answer": "3"}\n')(w, t)),
                              "p.jsonl: id 'a' is used by two different questions (line 2)"),
    "prompts-two-answers": (lambda w, t: explore(w, t, prompts=_text("p.jsonl", '{"question": "1+1", "answer": "2"}\n'
                                                                    '{"question": "1+1", "answer": "3"}\n')(w, t)),
                            "appears with answers '2' and '3' (line 2)"),
    # model directories
    "explorer-not-a-model": (lambda w, t: explore(w, t, explorer=t), "cannot load a tokenizer"),
    "explorer-pickle-only": (lambda w, t: explore(w, t, explorer=_pickle_only(w, t)),
                             "model: holds only pickle weights (pytorch_model.bin)"),
    "learner-pickle-only": (lambda w, t: train(w, t, learner=_pickle_only(w, t)),
                            "model: holds only pickle weights (pytorch_model.bin)"),
    "learner-corrupt-safetensors": (lambda w, t: train(w, t, learner=_model_copy(
        w, t, lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64))), "model: cannot load a causal LM"),
    "learner-config-not-json": (lambda w, t: train(w, t, learner=_model_copy(
        w, t, lambda d: (d / "config.json").write_text("{"))), "config.json' is not a valid JSON file"),
    "learner-custom-code": (lambda w, t: train(w, t, learner=_model_copy(w, t, _custom_code)),
                            "contains custom code", "set trust_remote_code: true only if you trust that code"),
    # banks
    "bank-other-tokenizer": (lambda w, t: train(w, t, learner=_other_tokenizer(w, t)),
                             "whose tokenizer (", "differs from the learner's"),
    "bank-other-template": (lambda w, t: train(w, t, template="Q: {question}="),
                            "prompts rendered with template '{question}=', but train.template is 'Q: {question}='"),
    "bank-other-sampling": (lambda w, t: explore(w, t, bank=w.bank, limit=4, temperature=1.0),
                            "bank.json: this bank was built with other settings (sampling.temperature: bank has 0.7, "
                            "now 1.0)"),
    "bank-not-a-bank": (lambda w, t: train(w, t, bank=t), "not a rollout bank (no bank.json)"),
    "bank-json-corrupt": (lambda w, t: train(w, t, bank=_bank_copy(w, t, BANK_EDITS["json"])),
                          "bank/bank.json: not valid JSON"),
    "bank-corrupt-shard": (lambda w, t: train(w, t, bank=_bank_copy(w, t, BANK_EDITS["corrupt"])),
                           "w000-000001.parquet: unreadable shard"),
    "bank-truncated-shard": (lambda w, t: train(w, t, bank=_bank_copy(w, t, BANK_EDITS["truncated"])),
                             "w000-000001.parquet: unreadable shard"),
    "bank-shard-missing": (lambda w, t: train(w, t, bank=_bank_copy(w, t, BANK_EDITS["missing"])),
                           "w000-000001.parquet: unreadable shard"),
    "bank-manifest-disagrees": (lambda w, t: train(w, t, bank=_bank_copy(w, t, BANK_EDITS["rows"])),
                                "w000-000001.parquet: 4 rows, manifest says 5"),
    "bank-info-truncated-shard": (lambda w, t: ["bank", "info", str(_bank_copy(w, t, BANK_EDITS["truncated"]))],
                                  "w000-000001.parquet: unreadable shard"),
    "bank-without-the-prompts": (lambda w, t: train(w, t, prompts=_other_prompts(w, t)),
                                 "holds none of the 4 training prompts of"),
    # runs and evaluation
    "out-dir-holds-a-run": (lambda w, t: train(w, t, out_dir=_run_dir(w, t)), "run: already holds a run; pass --resume"),
    "out-dir-unwritable": (lambda w, t: train(w, t, out_dir=_text("file", "")(w, t) / "run"),
                           "file/run: cannot write the run here ([Errno 20] Not a directory"),
    "passk-k-above-n": (lambda w, t: evaluate(w, t, ks="[1,8]"), "ks has k = 8 but only samples = 4 per problem"),
}


def _snapshot(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for root in roots for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_on_stderr_exit_2_and_writes_nothing(case, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: dataclass defaults plus --set
    build, *needles = CASES[case]
    args = [str(a) for a in build(world, tmp_path)]
    before = _snapshot(tmp_path, world.root)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert "Traceback" not in result.output
    assert _snapshot(tmp_path, world.root) == before  # no partial output, inputs untouched

