import json

import pytest
import torch

from pipeline.errors import UserError
from pipeline.evaluate.source import SourceKind, load_merged_model, resolve_source


def test_kinds_are_told_apart_without_loading(eval_world, lora_adapter):
    model = str(eval_world["model"])
    assert resolve_source(model).kind is SourceKind.LOCAL
    adapter = resolve_source(str(lora_adapter[0]))
    assert (adapter.kind, adapter.base, adapter.tokenizer) == (SourceKind.LOCAL_ADAPTER, model, str(lora_adapter[0]))
    assert resolve_source("Qwen/Qwen3-8B-Base").kind is SourceKind.HUB
    hub_adapter = resolve_source("me/lora", base_model="Qwen/Qwen3-8B-Base")
    assert (hub_adapter.kind, hub_adapter.tokenizer) == (SourceKind.HUB_ADAPTER, "Qwen/Qwen3-8B-Base")


def test_bad_model_paths_name_the_input_and_the_fix(tmp_path, lora_adapter):
    with pytest.raises(UserError, match="data/nope/model: no such directory"):
        resolve_source("data/nope/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a model"):
        resolve_source(str(tmp_path / "empty"))
    broken = tmp_path / "adapter"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    (broken / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="base model .*gone does not exist here; set evaluate.base_model"):
        resolve_source(str(broken))
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match="without adapter_model.safetensors"):
        resolve_source(str(broken))


def test_an_adapter_is_merged_onto_its_base(eval_world, lora_adapter):
    path, peft_model = lora_adapter
    merged = load_merged_model(resolve_source(str(path)), dtype="float32")
    base = load_merged_model(resolve_source(str(eval_world["model"])), dtype="float32")
    ids = torch.tensor([[5, 9, 13, 7, 21, 4]])
    with torch.no_grad():
        want, got, plain = peft_model(ids).logits, merged(ids).logits, base(ids).logits
    assert not hasattr(merged, "peft_config")  # a plain transformers model after merging
    assert torch.allclose(got, want, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2  # the adapter changed the model
