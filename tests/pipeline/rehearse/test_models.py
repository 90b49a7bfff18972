"""Stand-ins keep the real architecture, tokenizer and stop ids, and stop at a calibrated rate."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import UserError
from pipeline.rehearse.models import build_stand_in
from pipeline.rehearse.sources import resolve_real_model

SHRUNK = {"num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
          "head_dim", "layer_types", "max_window_layers", "dtype", "torch_dtype", "transformers_version",
          "_name_or_path", "architectures"}  # the shrunk fields, and where it was saved


@pytest.fixture(scope="module")
def stand_ins(qwen3_tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("stand-ins")
    out = {}
    for i, name in enumerate(("Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-8B-Base")):  # tied and untied heads
        real = resolve_real_model(name, tokenizer=str(qwen3_tokenizer_dir))
        out[name] = (real, build_stand_in(real, root / f"m{i}", seed=i))
    return out


def test_a_stand_in_has_the_real_config_tokenizer_and_stop_ids(stand_ins, qwen3_tokenizer_dir):
    from transformers import AutoConfig, AutoTokenizer

    for name, (real, path) in stand_ins.items():
        config = AutoConfig.from_pretrained(path).to_dict()
        full = AutoConfig.for_model(**real.config).to_dict()
        kept = set(full) - SHRUNK
        assert {k: config[k] for k in kept} == {k: full[k] for k in kept}, name
        assert {"vocab_size", "rope_parameters", "tie_word_embeddings", "bos_token_id"} <= kept
        assert config["num_hidden_layers"] == 1 and config["hidden_size"] == 64
        assert real.stop_ids == (151645, 151643)  # the tokenizer's eos first, then generation_config's
        assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == 151643  # as the real base model ships it
        mine, theirs = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
        assert mine.chat_template == theirs.chat_template and len(mine) == len(theirs) == 151669
        assert mine.encode("\\frac{1}{2} 你好") == theirs.encode("\\frac{1}{2} 你好")
    assert stand_ins["Qwen/Qwen3-1.7B-Base"][0].config["tie_word_embeddings"] is True
    assert stand_ins["Qwen/Qwen3-8B-Base"][0].config["tie_word_embeddings"] is False


def test_the_stop_ids_take_about_one_in_32_of_the_probability_on_random_contexts(stand_ins):
    import torch
    from transformers import AutoModelForCausalLM

    for name, (real, path) in stand_ins.items():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        ids = torch.randint(0, 151643, (4, 48), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            probs = model(input_ids=ids).logits.softmax(-1)
        stop = float(probs[..., list(real.stop_ids)].sum(-1).mean())
        top = probs.max(-1).values.mean()
        assert 1 / 64 < stop < 1 / 16, (name, stop)
        assert float(top) < 0.5, name  # not one token repeated: the rest of the distribution is spread


def test_no_tokenizer_anywhere_is_one_line_naming_the_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"huggingface-cli download Qwen/Qwen3-8B-Base config.json .*tokenizer.json"):
        resolve_real_model("Qwen/Qwen3-8B-Base")


def test_the_vendored_xz_tokenizer_directory_is_accepted_as_is():
    from pathlib import Path

    from transformers import AutoTokenizer

    vendored = Path(__file__).parents[2] / "fixtures" / "qwen3-tokenizer"
    real = resolve_real_model("Qwen/Qwen3-1.7B-Base", tokenizer=str(vendored))
    assert real.tokenizer_dir != str(vendored) and len(AutoTokenizer.from_pretrained(real.tokenizer_dir)) == 151669
