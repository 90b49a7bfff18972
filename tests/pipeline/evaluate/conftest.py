"""An evaluation world: a saved tiny testbed model, a LoRA adapter on it, and a
six-problem test split with two flawed problems (the testbed layout)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models sample faster on one thread (12× on a busy 2-core machine); the
    setting, like `evaluate --set threads=1`, must not leak into other tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory, char_tokenizer, tiny_family):
    from pipeline.data import Problem, write_problems_jsonl
    from pipeline.testbed import task

    root = tmp_path_factory.mktemp("eval_world")
    rng = np.random.default_rng(1)
    spec = task.TaskSpec()
    rows = [tuple(int(x) for x in n) for n in np.concatenate([task.sample_numbers(rng, 4, spec),
                                                               task.sample_flawed_numbers(rng, 2, spec)])]
    rows = [(min(n[0], 89),) + n[1:] for n in rows[:4]] + rows[4:]  # first four surely not flawed
    problems = [Problem(f"t{i}", task.question(n), task.answer(n), {"flawed": task.is_flawed(n, spec)})
                for i, n in enumerate(rows)]
    write_problems_jsonl(problems, root / "test.jsonl")
    return {"root": root, "model": tiny_family / "explorer", "test": root / "test.jsonl", "problems": problems}


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory, char_tokenizer, eval_world):
    """A LoRA adapter (random, non-zero B) on the world's model, saved with its tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pipeline.models import load_causal_lm

    base = load_causal_lm(str(eval_world["model"]), dtype="float32")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero (identity); make the adapter matter
    path = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(path, safe_serialization=True)
    char_tokenizer.save_pretrained(path)
    return path, model.eval()
