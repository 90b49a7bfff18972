import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.engines.base import Completion
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.run import Benchmark, sample_benchmark
from pipeline.passk import mean_pass_at_k
from pipeline.testbed import task
from pipeline.verifier import score_response

runner = CliRunner()


class ScriptedEngine:
    """Answers a testbed prompt with known solutions: flawed problems always wrong; the
    others right on even samples (always the same order) and wrong on odd ones."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        out = []
        for ids in prompts:
            nums = tuple(int(x) for x in self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("=").split("+"))
            flawed = task.is_flawed(nums, task.TaskSpec())
            texts = [task.solution(nums, 0, offset=10 if flawed or s % 2 else 0) for s in range(params.n)]
            out.append([Completion((1,) * len(t), t, (0.0,) * len(t), "stop") for t in texts])
        return out


def test_sampling_and_scoring_give_the_hand_computed_counts(eval_world, char_tokenizer):
    cfg = EvaluateConfig(samples=4, generate_batch_size=8, scoring_workers=0)
    engine = ScriptedEngine(char_tokenizer)
    bench = Benchmark("testbed", str(eval_world["test"]), tuple(eval_world["problems"]))
    seen = []
    results = sample_benchmark(engine, char_tokenizer, bench, cfg,
                               scorer=lambda rs, gs: [score_response(r, g) for r, g in zip(rs, gs)],
                               on_samples=seen.append)
    assert engine.calls == [2, 2, 2] and seen == [8, 8, 8]  # 8 sequences per call → 2 problems of n = 4
    assert [r.n_correct for r in results] == [2, 2, 2, 2, 0, 0]
    assert results[0].correct == (True, False, True, False)
    assert results[0].extracted[0] == eval_world["problems"][0].answer


def _evaluate(tmp_path, *extra):
    sets = ["samples=4", "max_new_tokens=12", "scoring_workers=0", "threads=1", f"out_dir={tmp_path / 'out'}"]
    return runner.invoke(app, ["evaluate", "--no-progress", *[a for s in sets for a in ("--set", s)], *extra])


def test_evaluate_end_to_end_on_a_tiny_model(eval_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: dataclass defaults plus --set
    result = _evaluate(tmp_path, "--set", f"model={eval_world['model']}",
                       "--set", f"benchmarks.testbed={eval_world['test']}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    table = pq.read_table(tmp_path / "out" / "results.parquet").to_pydict()
    assert table["problem_id"] == [p.id for p in eval_world["problems"]]
    assert table["flawed"] == [False] * 4 + [True] * 2 and table["n"] == [4] * 6
    assert table["correct"] == [sum(c) for c in table["sample_correct"]]
    assert all(1 <= x <= 12 for lengths in table["lengths"] for x in lengths)
    for responses, verdicts, gold in zip(table["responses"], table["sample_correct"], table["answer"]):
        assert [score_response(r, gold).correct for r in responses] == verdicts
    for subset, rows in (("all", range(6)), ("flawed", [4, 5]), ("rest", range(4))):
        want = mean_pass_at_k([4] * len(rows), [table["correct"][i] for i in rows], [1, 2, 4])
        assert metrics["testbed"][subset] == {f"pass@{k}": pytest.approx(v, abs=1e-6) for k, v in want.items()}
    assert metrics["testbed"]["stats"]["problems"] == 6
    # the DVC views: a few numbers (%) for `dvc metrics show`, the curves for `dvc plots`
    pct = lambda v: round(100 * v, 1)  # noqa: E731
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"testbed": {
        "pass@1": pct(metrics["testbed"]["all"]["pass@1"]), "flawed": pct(metrics["testbed"]["flawed"]["pass@1"]),
        "rest": pct(metrics["testbed"]["rest"]["pass@1"]), "pass@4": pct(metrics["testbed"]["all"]["pass@4"])}}
    lines = (tmp_path / "out" / "passk.csv").read_text().splitlines()
    assert lines[0] == "k,testbed,testbed_flawed,testbed_rest" and [r.split(",")[0] for r in lines[1:]] == ["1", "2", "4"]
    assert float(lines[3].split(",")[2]) == pytest.approx(100 * metrics["testbed"]["flawed"]["pass@4"], abs=0.01)
    assert metrics["testbed"]["stats"]["mean_length"] == pytest.approx(np.mean(sum(table["lengths"], [])), abs=1e-3)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["label"] == "out" and config["sampling"]["temperature"] == 1.0
    rerun = _evaluate(tmp_path / "again", "--set", f"model={eval_world['model']}",
                      "--set", f"benchmarks.testbed={eval_world['test']}")
    again = pq.read_table(tmp_path / "again" / "out" / "results.parquet").to_pydict()
    assert rerun.exit_code == 0 and again["responses"] == table["responses"]  # seeded: a rerun repeats


def test_evaluate_a_lora_adapter_with_the_papers_preset(eval_world, lora_adapter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _evaluate(tmp_path, "--set", f"model={lora_adapter[0]}",
                       "--set", f"benchmarks.testbed={eval_world['test']}",
                       "--set", "preset=qwen3-nothink", "--set", "ks=[1, 4]")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics["testbed"]["all"]) == ["pass@1", "pass@4"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "local LoRA adapter on" in config["model"] and config["sampling"]["presence_penalty"] == 1.5


def test_dry_run_prints_the_plan_and_writes_nothing(eval_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _evaluate(tmp_path, "--dry-run", "--set", f"model={eval_world['model']}",
                       "--set", f"benchmarks.testbed={eval_world['test']}")
    assert result.exit_code == 0, result.output
    assert "6 problems (all 6, flawed 2, rest 4)" in result.output
    assert "generate   24 responses, at most 288 new tokens" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_inputs_fail_in_one_line_and_write_nothing(eval_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"question": "1+2+3"}\n')
    model, test = f"model={eval_world['model']}", f"benchmarks.testbed={eval_world['test']}"
    cases = [
        (["--set", "model=data/missing/model", "--set", test], "evaluate.model data/missing/model: no such directory"),
        (["--set", model, "--set", f"benchmarks.testbed={no_answer}"], "no_answer.jsonl line 1: no answer field"),
        (["--set", model, "--set", test, "--set", "ks=[8]"], "ks has k = 8 but only samples = 4"),
        (["--set", model, "--set", test, "--set", "preset=greedy"], "'greedy' is not one of"),
    ]
    for args, needle in cases:
        result = _evaluate(tmp_path, *args)
        assert result.exit_code == 2, result.output
        assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
