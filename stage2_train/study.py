"""A study: named arms (each a set of `train` overrides) × seeds, run as separate
`s2lpo train` processes, then one report comparing them.

`run_study` is resumable: a finished run (summary.json present) is skipped, a started
one is continued with --resume. Runs go `parallel` at a time, each on `threads` torch
threads, so the 2-core CPU default runs two arms side by side.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


@dataclass(frozen=True)
class StudyConfig:
    """A `study_<name>` section of params.yaml. Each run is `s2lpo train` with the `train`
    section, then `base` overrides (shared by every arm: e.g. another family), then the
    arm's own overrides."""

    out_root: str = "data/study"
    seeds: tuple[int, ...] = (0, 1, 2)
    parallel: int = 2
    threads: int = 1
    base: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, Any] = field(default_factory=dict)
    baseline: str = "grpo"  # the arm the report compares against
    title: str = ""
    only: tuple[str, ...] = ()  # run just these arms (default: all)


def run_dirs(cfg: StudyConfig) -> list[tuple[str, int, Path]]:
    arms = [a for a in cfg.arms if not cfg.only or a in cfg.only]
    unknown = sorted(set(cfg.only) - set(cfg.arms))
    if unknown:
        raise UserError(f"study.only: {unknown} are not arms; pick from {sorted(cfg.arms)}")
    return [(arm, seed, Path(cfg.out_root) / arm / f"seed{seed}") for arm in arms for seed in cfg.seeds]


def command(cfg: StudyConfig, arm: str, seed: int, out: Path, params: str | None) -> list[str]:
    overrides = {**_flatten(cfg.base), **_flatten(cfg.arms[arm] or {})}
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--no-progress"]
    if params:
        cmd += ["--params", params]
    sets = {**overrides, "seed": seed, "out_dir": str(out), "threads": cfg.threads}
    for key, value in sets.items():
        cmd += ["--set", f"{key}={_yaml(value)}"]
    if (out / "config.json").exists():
        cmd.append("--resume")
    return cmd


def run_study(cfg: StudyConfig, *, params: str | None = None, echo=print) -> None:
    from tqdm import tqdm

    check_arms(cfg, params)
    # seed-major: every arm gets its first seed before any arm gets its second, so a
    # study stopped early still compares all arms
    todo = sorted(((a, s, d) for a, s, d in run_dirs(cfg) if not (d / "summary.json").exists()),
                  key=lambda run: cfg.seeds.index(run[1]))
    echo(f"study {cfg.out_root}: {len(todo)} of {len(run_dirs(cfg))} runs to do, {cfg.parallel} at a time")
    running: list[tuple[str, subprocess.Popen, object]] = []
    failed = []
    with tqdm(total=len(todo), desc="study", unit="run", dynamic_ncols=True) as bar:
        while todo or running:
            while todo and len(running) < cfg.parallel:
                arm, seed, out = todo.pop(0)
                out.mkdir(parents=True, exist_ok=True)
                log = (out / "train.log").open("a")
                cmd = command(cfg, arm, seed, out, params)
                log.write("$ " + shlex.join(cmd) + "\n")
                log.flush()
                running.append((f"{arm}/seed{seed}", subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            time.sleep(1.0)
            for item in list(running):
                name, proc, log = item
                if proc.poll() is not None:
                    log.close()
                    running.remove(item)
                    bar.update(1)
                    if proc.returncode != 0:
                        failed.append(name)
                        echo(f"{name}: failed (exit {proc.returncode}); see its train.log")
    if failed:
        raise UserError(f"{len(failed)} runs failed ({', '.join(failed)}); fix and re-run `s2lpo study run` to resume")


def run_one(cfg: StudyConfig, arm: str, seed: int, *, params: str | None = None, threads: int | None = None,
            progress: bool = False) -> Path:
    """Train one (arm, seed) of a study in the foreground: exactly the run `run_study` would
    launch (same command, same out_dir), so a DVC stage per arm × seed and `study run`
    share their runs. `threads` replaces the study's per-run thread count (a run alone
    may use every core). Returns the run's directory."""
    import dataclasses

    if arm not in cfg.arms:
        raise UserError(f"study arm {arm!r}: not an arm of this study; pick from {sorted(cfg.arms)}")
    if seed not in cfg.seeds:
        raise UserError(f"study seed {seed}: not one of this study's seeds {list(cfg.seeds)}; add it to `seeds`")
    check_arms(cfg, params)
    out = Path(cfg.out_root) / arm / f"seed{seed}"
    if (out / "summary.json").exists():
        return out
    cmd = command(dataclasses.replace(cfg, threads=threads), arm, seed, out, params)
    if progress:
        cmd.remove("--no-progress")
    out.mkdir(parents=True, exist_ok=True)
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"{out}: the run failed (see above); fix it and re-run to resume from its last checkpoint")
    return out


def check_arms(cfg: StudyConfig, params: str | None) -> None:
    """Validate every arm's overrides against the train config before launching anything."""
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig

    for arm, overrides in cfg.arms.items():
        if not isinstance(overrides, dict):
            raise UserError(f"study.arms.{arm}: expected a mapping of train overrides, e.g. {{temperature: 1.2}}")
        merged = {**_flatten(cfg.base), **_flatten(overrides)}
        sets = [f"{k}={_yaml(v)}" for k, v in merged.items()]
        try:
            load_stage_config(TrainConfig, "train", params_path=params, overrides=sets)
        except UserError as exc:
            raise UserError(f"study.arms.{arm}: {exc}") from None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
