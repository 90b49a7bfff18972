"""`s2lpo rehearse`: run a recipe end to end on this CPU, every model swapped for a stand-in.

The stages run as the user would run them — each its own `s2lpo` command in a child
process, on a params file the rehearsal writes (`pipeline.rehearse.plan`) — so what is
rehearsed is the real stage code, its config checks and its one-line errors:

    plan      train / explore / evaluate --dry-run on the recipe as written (real sizes)
    explore   the stand-in explorer fills a small bank
    verify    s2lpo bank verify
    train     2 steps (step 1 from the bank, step 2 online), a checkpoint each step
    resume    train --resume to step 3 (online) from step 2's checkpoint
    evaluate  the trained stand-in on a few problems of every benchmark

then looks at the bank (`pipeline.rehearse.findings`) and prints one report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from pipeline.errors import UserError
from pipeline.rehearse.plan import Caps, real_models, rehearsal_params


@dataclass
class StageRun:
    """One child command: its name, argv, wall time, exit status and last lines."""

    name: str
    argv: list[str]
    seconds: float = 0.0
    status: int | None = None  # None: not run (an earlier stage failed)
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def error(self) -> str:
        """The one-line error of a failed stage (the last `error:` line, else the last line)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        return (errors or lines or [f"exit status {self.status}"])[-1]


@dataclass
class Rehearsal:
    recipe: str
    out: Path
    models: dict[str, str] = field(default_factory=dict)  # real id → stand-in dir
    stages: list[StageRun] = field(default_factory=list)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def run_stage(stage: StageRun, *, cwd: Path, env: dict[str, str], log_dir: Path) -> StageRun:
    start = time.perf_counter()
    proc = subprocess.run(stage.argv, cwd=cwd, env=env, capture_output=True, text=True)
    stage.seconds, stage.status = time.perf_counter() - start, proc.returncode
    stage.stdout, stage.stderr = proc.stdout, proc.stderr
    (log_dir / f"{stage.name}.log").write_text(f"$ {' '.join(stage.argv)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return stage


def stage_plan(recipe: Path, params: Path, bank: str) -> list[StageRun]:
    """The child commands, in order; a stage runs only if every one before it passed."""
    p, r = str(params), str(recipe)
    return [
        StageRun("plan:train", _cli("train", "--params", r, "--dry-run")),
        StageRun("plan:explore", _cli("explore", "--params", r, "--dry-run")),
        StageRun("plan:evaluate", _cli("evaluate", "--params", r, "--dry-run")),
        StageRun("explore", _cli("explore", "--params", p)),
        StageRun("verify", _cli("bank", "verify", bank)),
        StageRun("train", _cli("train", "--params", p, "--no-progress")),
        StageRun("resume", _cli("train", "--params", p, "--resume", "--set", f"steps={Caps().steps}",
                                "--no-progress")),
        StageRun("evaluate", _cli("evaluate", "--params", p, "--no-progress")),
    ]


def rehearse(recipe: str | Path, *, out: str | Path, tokenizer: str | None = None,
             local_models: dict[str, str] | None = None, prompts: str | None = None,
             echo: Callable[[str], None] = print) -> Rehearsal:
    """Build stand-ins, write the rehearsal params, run every stage, return what happened."""
    from pipeline.config import load_params
    from pipeline.rehearse.models import build_stand_in
    from pipeline.rehearse.sources import resolve_real_model

    recipe, out = Path(recipe), Path(out).resolve()
    raw = load_params(recipe)
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    result = Rehearsal(str(recipe), out)
    for i, (name, temperature) in enumerate(sampling_temperatures(raw).items()):
        real = resolve_real_model(name, local=(local_models or {}).get(name), tokenizer=tokenizer)
        echo(f"stand-in  {name}: {real.config.get('model_type')} from {real.source}, stop ids {list(real.stop_ids)}")
        result.models[name] = str(build_stand_in(real, out / "models" / f"model{i}", seed=i, temperature=temperature,
                                                 mean_length=Caps().max_new_tokens / 3))
    params = out / "rehearsal.yaml"
    params.write_text(yaml.safe_dump(rehearsal_params(raw, stand_ins=result.models, out=str(out), prompts=prompts),
                                     sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    for stage in stage_plan(recipe, params, str(out / "bank")):
        if result.stages and not result.stages[-1].ok:
            result.stages.append(stage)  # not run
            continue
        echo(f"running   {stage.name} …")
        result.stages.append(run_stage(stage, cwd=Path.cwd(), env=env, log_dir=out / "logs"))
    return result


def sampling_temperatures(recipe: dict) -> dict[str, float]:
    """Each real model → the temperature it samples at in the recipe (explore's for the
    explorer, train's for the learner; 1.0 otherwise), so its stand-in's stop rate is
    calibrated where it is used."""
    temps = {name: 1.0 for name in real_models(recipe).values()}
    for section, key in (("train", "learner"), ("explore", "explorer")):
        block = recipe.get(section) or {}
        if block.get(key) in temps:
            temps[block[key]] = float(block.get("temperature", 1.0))
    return dict(sorted(temps.items()))


def write_summary(result: Rehearsal, report: str) -> Path:
    path = result.out / "rehearsal.json"
    path.write_text(json.dumps({"recipe": result.recipe, "models": result.models,
                                "stages": [{"name": s.name, "seconds": round(s.seconds, 2), "status": s.status,
                                            "error": None if s.ok or s.status is None else s.error}
                                           for s in result.stages]}, indent=1))
    (result.out / "report.txt").write_text(report + "\n")
    return path


def check_recipe_file(recipe: str | Path) -> None:
    if not Path(recipe).is_file():
        raise UserError(f"{recipe}: recipe not found; pass --params with a params file such as recipes/qwen3-8b.yaml")


def format_report(result: Rehearsal, *, findings=None, prompt=None, plan_lines=(), train_lines=(),
                  eval_lines=(), checks=()) -> str:
    """The one report: stages, the rendered prompt, how responses ended, checks, memory plan, verdict."""
    out = [f"s2lpo rehearse {result.recipe}  (stand-ins: tiny random weights, real configs and tokenizers)", "",
           "stages"]
    for s in result.stages:
        state = "not run" if s.status is None else ("pass" if s.ok else "FAIL")
        out.append(f"  {s.name:<14} {state:<8} {s.seconds:6.1f} s" + ("" if s.ok or s.status is None else f"  {s.error}"))
    out.append(f"  {'total':<14} {'':<8} {sum(s.seconds for s in result.stages):6.1f} s")
    if prompt:
        out += ["", "prompt (bank row 0, as the explorer saw it)", f"  text  {prompt[0]}", f"  ids   {prompt[1]}"]
    if findings is not None:
        f = findings
        out += ["", f"responses in the bank ({f.rows}, mean {f.mean_length:.1f} tokens)",
                f"  finish        {', '.join(f'{k} {v}' for k, v in sorted(f.finish.items()))}",
                f"  ended by      {', '.join(f'{k}: {v}' for k, v in sorted(f.ended_by.items()))}",
                f"  truncated     {f.truncated_share:.0%}",
                f"  empty text    {f.empty_text}   only a stop token {f.stop_only}",
                "  specials inside  " + (", ".join(f"{k} ×{v}" for k, v in f.specials_inside.items()) or "none")]
    for title, lines in (("train", train_lines), ("evaluate", eval_lines), ("memory plan (real sizes)", plan_lines)):
        if lines:
            out += ["", title, *(f"  {ln}" for ln in lines)]
    if checks:
        out += ["", "checks", *(f"  {'ok  ' if ok else 'FAIL'} {text}" for ok, text in checks)]
    failed = [s for s in result.stages if s.status not in (0, None)]
    bad_checks = [text for ok, text in checks if not ok]
    out.append("")
    if failed:
        out.append(f"REHEARSAL FAILED at {failed[0].name}: {failed[0].error}  (log: {result.out}/logs/{failed[0].name}.log)")
    elif bad_checks:
        out.append(f"REHEARSAL FAILED: {bad_checks[0]}")
    else:
        out.append(f"REHEARSAL PASSED: {result.recipe} ran end to end ({len(result.stages)} stages, "
                   f"{sum(s.seconds for s in result.stages):.0f} s); the real run can start")
    return "\n".join(out)
