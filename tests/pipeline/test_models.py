"""Untrusted model directories: weights load from safetensors only, and code shipped with
a model runs only when the user sets trust_remote_code."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from pipeline.errors import UserError
from pipeline.models import load_causal_lm, load_tokenizer, model_identity


@pytest.fixture
def model_dir(tiny_family, tmp_path):
    """A copy of the tiny explorer to spoil."""
    return shutil.copytree(tiny_family / "explorer", tmp_path / "model")


def _pickle_only(d):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


def _custom_code(d):
    """A config whose model class lives in the directory's own Python file, which would
    leave a marker behind if it ever ran."""
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="s2lpo-custom", auto_map={"AutoConfig": "custom.Config",
                                                       "AutoModelForCausalLM": "custom.Model"})
    (d / "config.json").write_text(json.dumps(config))
    (d / "custom.py").write_text(f"open({str(d / 'code-ran')!r}, 'w').close()\n")


@pytest.mark.parametrize("spoil, needle", [
    (_pickle_only, "holds only pickle weights (pytorch_model.bin); s2lpo loads safetensors only"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "cannot load a causal LM from safetensors"),
    (_custom_code, "contains custom code which must be executed"),
], ids=["pickle-only", "corrupt-safetensors", "custom-code"])
def test_unsafe_or_broken_model_directories_are_refused_in_one_line(model_dir, spoil, needle):
    spoil(model_dir)
    with pytest.raises(UserError) as refused:
        load_causal_lm(str(model_dir))
    assert str(refused.value).startswith(f"{model_dir}: ") and needle in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (model_dir / "code-ran").exists()


def test_custom_code_is_named_with_the_setting_that_allows_it(model_dir):
    _custom_code(model_dir)
    with pytest.raises(UserError, match="set trust_remote_code: true only if you trust that code"):
        load_causal_lm(str(model_dir))
    load_tokenizer(str(model_dir))  # the tokenizer is plain tokenizer.json: no code to run
    assert not (model_dir / "code-ran").exists()


def test_a_pickle_only_directory_has_no_identity(model_dir):
    _pickle_only(model_dir)
    with pytest.raises(UserError, match="holds only pickle weights"):
        model_identity(str(model_dir))


def test_every_stage_leaves_remote_code_off_by_default():
    from pipeline.evaluate.config import EvaluateConfig
    from stage1_explore.config import ExploreConfig
    from stage2_train.config import TrainConfig

    defaults = {cls.__name__: {f.name: f.default for f in dataclasses.fields(cls)}["trust_remote_code"]
                for cls in (ExploreConfig, TrainConfig, EvaluateConfig)}
    assert defaults == {"ExploreConfig": False, "TrainConfig": False, "EvaluateConfig": False}
