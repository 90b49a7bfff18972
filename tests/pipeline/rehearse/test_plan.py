"""The rehearsal's params: the recipe as written, shrunk only in size and place."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.rehearse.plan import Caps, real_models, rehearsal_params

RECIPE = Path(__file__).parents[3] / "recipes" / "qwen3-8b.yaml"


def _recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def test_every_model_id_of_the_recipe_is_swapped_for_its_stand_in():
    recipe = _recipe()
    models = real_models(recipe)
    assert models["explore.explorer"] == "Qwen/Qwen3-1.7B-Base"
    assert models["train.learner"] == "Qwen/Qwen3-8B-Base"
    stand = {name: f"/tmp/stand/{i}" for i, name in enumerate(sorted(set(models.values())))}
    out = rehearsal_params(recipe, stand_ins=stand, out="/tmp/r")
    assert out["explore"]["explorer"] == stand["Qwen/Qwen3-1.7B-Base"]
    assert out["train"]["learner"] == stand["Qwen/Qwen3-8B-Base"]
    assert out["evaluate"]["model"] == "/tmp/r/train/model"  # the trained stand-in
    assert out["train"]["bank"] == out["explore"]["bank"] == "/tmp/r/bank"


def test_what_the_stages_compute_is_kept_and_only_sizes_and_place_change():
    recipe = _recipe()
    out = rehearsal_params(recipe, stand_ins={}, out="/tmp/r", caps=Caps(prompts=3, samples=4, max_new_tokens=40))
    ex, tr, ev = out["explore"], out["train"], out["evaluate"]
    for key in ("template", "temperature", "top_p", "top_k", "split"):
        assert ex[key] == recipe["explore"][key]
    assert (ex["limit"], ex["samples_per_prompt"], ex["max_new_tokens"]) == (3, 4, 40)
    assert tr["loss"] == recipe["train"]["loss"] and tr["lora"] == recipe["train"]["lora"]
    assert tr["mixing"] == recipe["train"]["mixing"] and tr["template"] == recipe["train"]["template"]
    assert tr["anneal"] == {**recipe["train"]["anneal"], "t_mix": 2}  # step 1 from the bank, then online
    assert (tr["steps"], tr["checkpoint_every"], tr["group_size"]) == (2, 1, 4)
    assert ev["preset"] == recipe["evaluate"]["preset"] and ev["benchmarks"] == recipe["evaluate"]["benchmarks"]
    assert (ev["limit"], ev["samples"], ev["ks"]) == (2, 2, [1, 2])
    for section in (ex, tr, ev):
        assert (section["engine"], section["dtype"]) == ("hf", "float32")
        assert "gpu_memory_utilization" not in section and section.get("scoring_workers", 0) <= 2
    assert "distributed" not in tr and "vllm_sleep_level" not in tr


def test_a_prompt_file_replaces_the_recipes_hub_dataset_in_explore_and_train_only():
    out = rehearsal_params(_recipe(), stand_ins={}, out="/tmp/r", prompts="tests/fixtures/dapo_verl_sample.jsonl")
    assert out["explore"]["prompts"] == out["train"]["prompts"] == "tests/fixtures/dapo_verl_sample.jsonl"
    assert "prompts" not in out["evaluate"]
