"""`pipeline.model_configs.model_config`: local directory → hub cache → hub → shipped → one-line error."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.errors import UserError
from pipeline.model_configs import ConfigSource, model_config, shipped_models

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, head_dim, tied (the public config.json files)
    "Qwen/Qwen3-1.7B-Base": (2048, 6144, 28, 16, 8, 128, True),
    "Qwen/Qwen3-4B-Base": (2560, 9728, 36, 32, 8, 128, True),
    "Qwen/Qwen3-8B-Base": (4096, 12288, 36, 32, 8, 128, False),
    "Qwen/Qwen3-14B-Base": (5120, 17408, 40, 40, 8, 128, False),
}


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty hub cache and offline mode: only local directories and shipped configs answer."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub-cache"


def test_the_four_qwen3_base_configs_ship_with_their_public_numbers(no_hub):
    assert shipped_models() == sorted(SHAPES)
    for name, (h, i, layers, heads, kv, hd, tied) in SHAPES.items():
        mc = model_config(name)
        c = mc.config
        assert mc.source is ConfigSource.SHIPPED
        shape = (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["num_attention_heads"],
                 c["num_key_value_heads"], c["head_dim"], c["tie_word_embeddings"])
        assert shape == (h, i, layers, heads, kv, hd, tied)
        assert (c["model_type"], c["vocab_size"], c["rope_theta"], c["max_position_embeddings"], c["rms_norm_eps"],
                c["bos_token_id"], c["eos_token_id"], c["torch_dtype"], c["attention_bias"]) == \
            ("qwen3", 151936, 1000000, 32768, 1e-6, 151643, 151643, "bfloat16", False)
        assert mc.generation == {"bos_token_id": 151643, "eos_token_id": 151643}
        assert mc.eos_token_ids == (151643,)


def test_shipped_configs_build_a_transformers_config(no_hub):
    from transformers import AutoConfig

    mc = model_config("Qwen/Qwen3-8B-Base")
    cfg = AutoConfig.from_pretrained(mc.where)  # the shipped folder is laid out like a model directory
    assert (cfg.model_type, cfg.hidden_size, cfg.tie_word_embeddings) == ("qwen3", 4096, False)
    small = mc.transformers_config(num_hidden_layers=2)
    assert (type(small).__name__, small.num_hidden_layers, small.vocab_size) == ("Qwen3Config", 2, 151936)


def test_a_local_directory_comes_first(no_hub, tmp_path):
    local = tmp_path / "Qwen" / "Qwen3-8B-Base"  # shadows the hub id when run from tmp_path
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64}))
    (local / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    mc = model_config(str(local))
    assert (mc.source, mc.config["hidden_size"], mc.eos_token_ids) == (ConfigSource.LOCAL, 64, (151643, 151645))


def test_the_hub_cache_comes_before_the_shipped_config(no_hub):
    snap = no_hub / "models--Qwen--Qwen3-8B-Base" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 4096, "revision_marker": 1}))
    (no_hub / "models--Qwen--Qwen3-8B-Base" / "refs").mkdir()
    (no_hub / "models--Qwen--Qwen3-8B-Base" / "refs" / "main").write_text("abc123")
    mc = model_config("Qwen/Qwen3-8B-Base")
    assert (mc.source, mc.config.get("revision_marker"), mc.generation) == (ConfigSource.HUB, 1, {})


def test_an_unreachable_hub_fails_fast_to_the_shipped_config(monkeypatch, tmp_path):
    """Not offline, but the endpoint refuses connections: no half-minute of retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    start = time.perf_counter()
    mc = model_config("Qwen/Qwen3-4B-Base")
    assert mc.source is ConfigSource.SHIPPED and time.perf_counter() - start < 5


def test_an_unknown_hub_id_names_the_download_that_fixes_it(no_hub):
    with pytest.raises(UserError) as exc:
        model_config("Org/Some-Model", key="train.learner")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("train.learner Org/Some-Model: ")
    assert ("huggingface-cli download Org/Some-Model config.json tokenizer.json tokenizer_config.json "
            "generation_config.json --local-dir models/Some-Model") in msg


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir() or p, "has no config.json"),
    (lambda p: p / "not" / "there", "no such directory"),
])
def test_local_paths_that_hold_no_config_are_refused(no_hub, tmp_path, make, expected):
    path = make(tmp_path / "model")
    with pytest.raises(UserError, match=expected):
        model_config(str(path), key="explore.explorer")
