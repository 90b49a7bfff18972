"""Shared fixtures: the testbed tokenizer and tiny random models of its family."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def char_tokenizer():
    from pipeline.testbed.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    """A randomly initialised 1-layer testbed model (fp32, eval mode)."""
    from pipeline.testbed.model import ModelShape, build_model

    return build_model(ModelShape(layers=1, hidden=64), char_tokenizer, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, char_tokenizer, tiny_model):
    """A saved tiny explorer (random 1-layer testbed model) and 40 testbed prompts."""
    import numpy as np

    from pipeline.data import Problem, write_problems_jsonl
    from pipeline.testbed import task

    root = tmp_path_factory.mktemp("family")
    tiny_model.save_pretrained(root / "explorer")
    char_tokenizer.save_pretrained(root / "explorer")
    nums = task.sample_numbers(np.random.default_rng(0), 40, task.TaskSpec())
    problems = [Problem(f"p{i:03d}", task.question(tuple(n)), task.answer(tuple(n)), {}) for i, n in enumerate(nums)]
    write_problems_jsonl(problems, root / "train.jsonl")
    return root


QWEN3_TOKENIZER = FIXTURES / "qwen3-tokenizer"


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(tmp_path_factory) -> Path:
    """The real Qwen3 tokenizer and chat template (vendored, `tokenizer.json` xz-compressed)
    unpacked into a directory `AutoTokenizer.from_pretrained` loads."""
    import lzma
    import shutil

    out = tmp_path_factory.mktemp("qwen3-tokenizer")
    (out / "tokenizer.json").write_bytes(lzma.decompress((QWEN3_TOKENIZER / "tokenizer.json.xz").read_bytes()))
    shutil.copy(QWEN3_TOKENIZER / "tokenizer_config.json", out / "tokenizer_config.json")
    return out
