"""`s2lpo rehearse --params recipes/qwen3-8b.yaml`: the committed recipe end to end on this CPU,
on stand-ins built from the shipped Qwen3 configs and the vendored real tokenizer (as the README and
docs/recipe.md run it from a fresh clone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_qwen3_8b_recipe_rehearses_end_to_end(tmp_path):
    out = tmp_path / "rehearse"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "rehearse", "--params", "recipes/qwen3-8b.yaml",
                           "--tokenizer", "tests/fixtures/qwen3-tokenizer", "--prompts", "tests/fixtures/dapo_verl_sample.jsonl",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    report = proc.stdout
    assert proc.returncode == 0, report + proc.stderr
    assert report.splitlines()[-1].startswith("REHEARSAL PASSED: recipes/qwen3-8b.yaml ran end to end")
    summary = json.loads((out / "rehearsal.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["plan:train", "plan:explore", "plan:evaluate", "explore",
                                                     "verify", "train", "resume", "evaluate"]
    assert all(s["status"] == 0 for s in summary["stages"])
    assert set(summary["models"]) == {"Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-8B-Base"}
    # the prompt as the explorer saw it: Qwen3's chat template with the empty think block
    assert "text  <|im_start|>user\\n" in report and "<think>\\n\\n</think>\\n\\n" in report
    assert "ids   151644 872 198" in report
    # how responses ended: both of Qwen3's stop ids end some of them, and every check passed
    assert "151645 <|im_end|>" in report and "151643 <|endoftext|>" in report
    assert "FAIL" not in report
    # step 1 drew the whole group from the bank, steps 2-3 were online, 3 resumed from 2's checkpoint
    assert "step 1: G_w 4 from the bank, G_s 0 online" in report  # one prompt × G = 4 per step
    assert "step 2: G_w 0 from the bank, G_s 4 online" in report and "step 3: G_w 0" in report
    assert "resuming from" in report and "step-000002" in report
    for bench in ("aime24", "aime25", "math500"):
        assert f"\n  {bench:<10} 2 problems × 2" in report
    # the memory plan of the real sizes (8 × 80 GB), from the recipe's own dry runs
    assert "memory plan (real sizes)" in report
