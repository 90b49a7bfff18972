"""The rehearsal's params: a recipe as written, shrunk only where a CPU must shrink it.

`rehearsal_params` is pure: recipe mapping in, params mapping out. It keeps every setting
that decides *what* the stages compute (prompt layout and template, sampling presets,
loss, schedule kind, LoRA, gradient checkpointing, checkpointing, verifier) and changes
only *how much* they compute and *where*:

- models: every model id is replaced by its tiny stand-in directory (same architecture
  and tokenizer, random weights; `pipeline.rehearse.models`);
- sizes: a few prompts, a few samples per prompt and group members (capped), one prompt
  per training step, a few benchmark problems, responses capped at `max_new_tokens`;
- schedule: 3 steps with T_mix = 2, so step 1 draws the whole group from the bank
  (α = 1) and steps 2–3 are online (α = 0); a checkpoint every step, so step 3 can
  resume from step 2's;
- place: the HF engine in float32 on this CPU, one process, scoring in-process or on at
  most 2 workers; vLLM sleep mode and FSDP settings stay in the file but do not apply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# the roles whose model ids a rehearsal swaps for stand-ins: (section, key)
MODEL_KEYS = (("explore", "explorer"), ("train", "learner"), ("evaluate", "model"), ("evaluate", "base_model"))


@dataclass(frozen=True)
class Caps:
    """How much a rehearsal computes (the only knobs it adds to the recipe)."""

    prompts: int = 4
    samples: int = 4  # M of the bank, and G of training (≥ 2)
    max_new_tokens: int = 48  # the stand-ins stop after ~max_new_tokens / 3 (a few run to the cap)
    benchmark_problems: int = 2
    eval_samples: int = 2
    steps: int = 3  # 1 from the bank, then online; checkpoint and resume in between
    scoring_workers: int = 2


def rehearsal_params(recipe: dict[str, Any], *, stand_ins: dict[str, str], out: str, caps: Caps = Caps(),
                     prompts: str | None = None) -> dict[str, dict[str, Any]]:
    """The explore, train and evaluate sections a rehearsal runs, under `out`.

    `stand_ins` maps each real model id of the recipe to its stand-in directory;
    `prompts` replaces the prompt source of explore and train (a local file when the
    recipe's is a hub dataset and the machine is offline).
    """
    explore = _explore(copy.deepcopy(recipe.get("explore", {})), stand_ins, out, caps, prompts)
    train = _train(copy.deepcopy(recipe.get("train", {})), stand_ins, out, caps, prompts, bank=explore["bank"])
    evaluate = _evaluate(copy.deepcopy(recipe.get("evaluate", {})), stand_ins, out, caps,
                         model=f"{train['out_dir']}/model")
    return {"explore": explore, "train": train, "evaluate": evaluate}


def _on_cpu(section: dict[str, Any], caps: Caps) -> None:
    section.update(engine="hf", dtype="float32")
    if "scoring_workers" in section:
        section["scoring_workers"] = min(int(section["scoring_workers"]), caps.scoring_workers)
    for key in ("gpu_memory_utilization", "tensor_parallel_size", "generate_batch_size"):
        section.pop(key, None)


def _explore(s: dict[str, Any], stand_ins, out: str, caps: Caps, prompts) -> dict[str, Any]:
    _swap(s, "explorer", stand_ins)
    if prompts:
        s.update(prompts=prompts, layout=s.get("layout", "auto"))
    s.update(bank=f"{out}/bank", limit=min(int(s.get("limit") or caps.prompts), caps.prompts),
             samples_per_prompt=min(int(s.get("samples_per_prompt", caps.samples)), caps.samples),
             max_new_tokens=min(int(s.get("max_new_tokens", caps.max_new_tokens)), caps.max_new_tokens),
             prompts_per_shard=2)
    _on_cpu(s, caps)
    return s


def _train(s: dict[str, Any], stand_ins, out: str, caps: Caps, prompts, *, bank: str) -> dict[str, Any]:
    _swap(s, "learner", stand_ins)
    if prompts:
        s.update(prompts=prompts, layout=s.get("layout", "auto"))
    group = max(2, min(int(s.get("group_size", caps.samples)), caps.samples))
    anneal = dict(s.get("anneal") or {})
    if anneal.get("schedule", "linear") != "constant":
        anneal["t_mix"] = 2
    s.update(bank=bank if s.get("bank") is not None else None, out_dir=f"{out}/train",
             limit=min(int(s.get("limit") or caps.prompts), caps.prompts), steps=caps.steps - 1,
             prompts_per_step=1, group_size=group, anneal=anneal,
             max_new_tokens=min(int(s.get("max_new_tokens", caps.max_new_tokens)), caps.max_new_tokens),
             mini_batch_size=group, micro_batch_size=max(1, group // 2), checkpoint_every=1,
             tensorboard=False, wandb_project=None, threads=None)
    s.pop("rollout_dtype", None)
    s.pop("distributed", None)  # one process here: torchrun's strategy does not apply
    s.pop("vllm_sleep_level", None)
    if s.get("eval"):
        ev = dict(s["eval"])
        ev.update(every=1, limit=1, samples=min(int(ev.get("samples", 2)), caps.eval_samples),
                  max_new_tokens=min(int(ev.get("max_new_tokens", caps.max_new_tokens)), caps.max_new_tokens))
        s["eval"] = ev
    _on_cpu(s, caps)
    return s


def _evaluate(s: dict[str, Any], stand_ins, out: str, caps: Caps, *, model: str) -> dict[str, Any]:
    s.update(model=model, out_dir=f"{out}/evaluate", limit=caps.benchmark_problems,
             samples=min(int(s.get("samples", caps.eval_samples)), caps.eval_samples),
             max_new_tokens=min(int(s.get("max_new_tokens", caps.max_new_tokens)), caps.max_new_tokens))
    s.pop("base_model", None)
    if s.get("ks"):
        s["ks"] = sorted({k for k in s["ks"] if k <= s["samples"]} | {1})
    s.pop("max_model_len", None)
    _on_cpu(s, caps)
    return s


def _swap(section: dict[str, Any], key: str, stand_ins: dict[str, str]) -> None:
    if section.get(key) in stand_ins:
        section[key] = stand_ins[section[key]]


def real_models(recipe: dict[str, Any]) -> dict[str, str]:
    """role → real model id, for every role the recipe names (`train.learner` etc.)."""
    return {f"{sec}.{key}": recipe[sec][key] for sec, key in MODEL_KEYS
            if isinstance(recipe.get(sec), dict) and recipe[sec].get(key)}
