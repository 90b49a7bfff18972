"""`s2lpo prepare`: build the testbed family — splits, tokenizer, explorer, learner, pass@k.

Layout of `out_dir` (every later stage loads these like hub artifacts):

    train.jsonl, test.jsonl   problems in the question/answer layout (+ `flawed`)
    explorer/, learner/       `save_pretrained` model + tokenizer (safetensors)
    medium/                   the same for the optional middle-sized member (`medium` set)
    passk.json                pass@k of every member on the test split, by subset
    passk.png                 the same as curves
    sft_loss.csv              per-step SFT loss of every member

The members train one after the other (explorer, medium if any, learner), each on a fixed number of
threads. Everything is built
in `<out_dir>.partial` and each finished artifact is then renamed into `out_dir`, so
an interrupted run never leaves a half-written model or split behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.data import Problem, write_problems_jsonl
from pipeline.testbed import task
from pipeline.testbed.config import MemberRecipe, PrepareConfig

MEMBERS = ("explorer", "learner")


def members(cfg: PrepareConfig) -> tuple[str, ...]:
    """The members `cfg` builds, smallest first: explorer, medium (when set), learner."""
    return ("explorer", "medium", "learner") if cfg.medium is not None else MEMBERS


def make_splits(cfg: PrepareConfig) -> tuple[list[Problem], list[Problem]]:
    """Stratified test split (`test_flawed` flawed problems) and a disjoint train split."""
    rng = np.random.default_rng(cfg.seed)
    spec = cfg.task
    seen: set[tuple[int, int, int]] = set()

    def draw(n: int, flawed: bool | None) -> list[tuple[int, int, int]]:
        out = []
        while len(out) < n:
            batch = task.sample_flawed_numbers(rng, n, spec) if flawed else task.sample_numbers(rng, n, spec)
            for nums in map(lambda r: tuple(int(v) for v in r), batch):
                ok = flawed is None or task.is_flawed(nums, spec) == flawed
                if ok and nums not in seen and len(out) < n:
                    seen.add(nums)
                    out.append(nums)
        return out

    n_flawed = cfg.test_flawed if spec.flaw_offset else 0
    test = draw(n_flawed, True) + draw(cfg.test_size - n_flawed, False if n_flawed else None)
    train = draw(cfg.train_size, None)

    def problems(split: str, rows) -> list[Problem]:
        return [Problem(id=f"{split}-{i:05d}", question=task.question(n), answer=task.answer(n),
                        meta={"flawed": task.is_flawed(n, spec)}) for i, n in enumerate(rows)]

    return problems("train", train), problems("test", test)


def prepare(cfg: PrepareConfig, *, echo=print) -> dict:
    """Build the family into `cfg.out_dir`; returns the pass@k report."""
    from pipeline.testbed import numerics

    numerics.pin(cfg.numerics)  # before this process (and the workers it spawns) runs any torch kernel
    kernels = numerics.check(cfg.numerics)
    if "warning" in kernels:
        echo(f"warning: prepare.numerics {cfg.numerics.value}: {kernels['warning']}")
    out = Path(cfg.out_dir)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    start = time.time()
    train, test = make_splits(cfg)
    write_problems_jsonl(train, tmp / "train.jsonl")
    write_problems_jsonl(test, tmp / "test.jsonl")
    results = _train_members(cfg, tmp, test)
    report = {**_report(cfg, test, results, wall_s=time.time() - start), "numerics": kernels}
    (tmp / "passk.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_loss_csv(tmp / "sft_loss.csv", {m: results[m]["losses"] for m in members(cfg)})
    from pipeline.testbed.plots import plot_family_passk

    plot_family_passk(report, tmp / "passk.png")
    _publish(tmp, out)
    echo(format_report(report))
    return report


def _publish(tmp: Path, out: Path) -> None:
    """Move each finished artifact from `tmp` into `out` (each move is one rename)."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(tmp.iterdir()):
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()


def _train_members(cfg: PrepareConfig, tmp: Path, test: list[Problem]) -> dict:
    """Train and evaluate every member, one after the other, each on a fixed number of threads.

    The small members train on one thread (the explorer's SFT step barely uses a second
    core: 0.058 s on one thread, 0.052 s on two) and the learner on every core (0.34 s on
    one, 0.19 s on two). The thread count changes how reductions split, and so the weights:
    fixed per member, the family is rebuilt byte for byte on one machine. (The learner used
    to start on one thread beside a spawned explorer and take every core once the explorer
    was done, at a step that depended on timing: two `make run`s on one machine built two
    different learners, for ~4% less wall time.) Pinned numerics (`numerics` other than
    native) also fix the learner's count, `PINNED_LEARNER_THREADS`, whatever the core count.
    """
    from pipeline.testbed.numerics import Numerics

    cores = max(1, os.cpu_count() or 1)
    learner_threads = cores if cfg.numerics is Numerics.NATIVE else PINNED_LEARNER_THREADS
    return {name: _member_job(cfg, name, getattr(cfg, name), tmp / name, test,
                              threads=learner_threads if name == "learner" else 1)
            for name in members(cfg)}


PINNED_LEARNER_THREADS = 2


def _member_job(cfg: PrepareConfig, name: str, recipe: MemberRecipe, out_dir: Path, test, *,
                threads: int | None = None) -> dict:
    """Fine-tune one member, save it, and count its correct samples on the test split."""
    import torch
    from tqdm import tqdm

    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.sample_score import correct_counts
    from pipeline.testbed.model import ModelShape, build_model, count_parameters
    from pipeline.testbed.sft import train_sft
    from pipeline.testbed.tokenizer import build_char_tokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = build_char_tokenizer()
    model = build_model(ModelShape(recipe.layers, recipe.hidden), tokenizer, seed=recipe.seed)
    excluded = frozenset(tuple(int(x) for x in p.question.split("+")) for p in test)
    t0 = time.time()
    with tqdm(total=recipe.sft_steps, desc=f"sft {name} ({count_parameters(model) / 1e6:.2f}M)",
              unit="step", dynamic_ncols=True) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        settings = recipe.sft_settings(cfg.sft)
        losses = train_sft(model, tokenizer, steps=recipe.sft_steps, settings=settings, spec=cfg.task,
                           seed=recipe.seed, excluded=excluded, progress=progress)
    sft_s = time.time() - t0
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    params = SamplingParams(n=cfg.eval_samples, temperature=cfg.eval_temperature,
                            max_new_tokens=cfg.eval_max_new_tokens, seed=recipe.seed)
    counts = correct_counts(HFEngine(model, tokenizer), tokenizer, test, params,
                            template=task.QUESTION_TEMPLATE)
    return {"losses": losses, "counts": counts.tolist(), "parameters": count_parameters(model),
            "sft_batch_size": settings.batch_size, "sft_lr": settings.lr,
            "sft_s": round(sft_s, 1), "eval_s": round(time.time() - t0 - sft_s, 1)}


def _report(cfg: PrepareConfig, test: list[Problem], results: dict, *, wall_s: float) -> dict:
    from pipeline.sample_score import passk_by_subset, powers_of_two
    from pipeline.passk import crossover_k

    flawed = np.array([bool(p.meta["flawed"]) for p in test])
    subsets = {"all": np.ones_like(flawed), "flawed": flawed, "rest": ~flawed}
    ks = powers_of_two(cfg.eval_samples)
    report: dict = {"n_samples": cfg.eval_samples, "temperature": cfg.eval_temperature,
                    "test_problems": len(test), "flawed_problems": int(flawed.sum()), "wall_s": round(wall_s, 1)}
    for name in members(cfg):
        r = results[name]
        table = passk_by_subset(np.array(r["counts"]), cfg.eval_samples, subsets, ks)
        report[name] = {"parameters": r["parameters"], "sft_steps": getattr(cfg, name).sft_steps,
                        "sft_batch_size": r["sft_batch_size"], "sft_lr": r["sft_lr"],
                        "sft_s": r["sft_s"], "eval_s": r["eval_s"], "final_sft_loss": round(r["losses"][-1], 4),
                        "pass_at_k": {s: {str(k): round(v, 4) for k, v in t.items()} for s, t in table.items()}}
    curves = {m: {int(k): v for k, v in report[m]["pass_at_k"]["all"].items()} for m in members(cfg)}
    report["crossover_k"] = crossover_k(curves["explorer"], curves["learner"])
    if cfg.medium is not None:
        report["crossover_k_medium"] = crossover_k(curves["medium"], curves["learner"])
    return report


def _write_loss_csv(path: Path, losses: dict[str, list[float]]) -> None:
    steps = max(map(len, losses.values()))
    lines = ["step," + ",".join(losses)]
    for i in range(steps):
        lines.append(f"{i}," + ",".join(f"{v[i]:.5f}" if i < len(v) else "" for v in losses.values()))
    path.write_text("\n".join(lines) + "\n")


def format_report(report: dict) -> str:
    """The family's pass@k table as aligned text, one row per member × subset."""
    ks = list(report["learner"]["pass_at_k"]["all"])
    head = f"{'model':<9} {'subset':<7} " + " ".join(f"{'@' + k:>6}" for k in ks)
    rows = [head, "-" * len(head)]
    for name in (m for m in ("explorer", "medium", "learner") if m in report):
        for subset, table in report[name]["pass_at_k"].items():
            rows.append(f"{name:<9} {subset:<7} " + " ".join(f"{100 * table[k]:6.1f}" for k in ks))
    medium = f" (medium: {report['crossover_k_medium']})" if "medium" in report else ""
    rows.append(f"crossover k (all problems): {report['crossover_k']}{medium}   wall time: {report['wall_s']} s")
    return "\n".join(rows)
