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
