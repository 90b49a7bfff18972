"""The `s2lpo` command line: one command per stage, thin over keyword-only library calls.

Heavy imports (torch, transformers, vllm) live inside command bodies so `--help`
answers instantly. A `UserError` is printed as one line on stderr with exit status
2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from pipeline import __version__
from pipeline.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Small-to-Large Policy Optimization: explore with a small model, train a large one.")

ParamsOpt = typer.Option(None, "--params", "-p", help="params.yaml to read (default: ./params.yaml if present).",
                         dir_okay=False)
SetOpt = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                      help="Override a key of this stage's params section, e.g. --set learner.sft_steps=200.")


def fail(message: str) -> None:
    """Print one line to stderr and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def user_errors(fn: Callable) -> Callable:
    """Turn a `UserError` raised anywhere inside a command into a one-line exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"s2lpo {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """s2lpo — stage commands: prepare → explore → train → evaluate."""


@app.command()
@user_errors
def prepare(params: Optional[Path] = ParamsOpt, overrides: list[str] = SetOpt) -> None:
    """Build the CPU testbed family: task splits, char tokenizer, explorer and learner, pass@k table."""
    from pipeline.config import load_stage_config
    from pipeline.testbed.build import prepare as run_prepare
    from pipeline.testbed.config import PrepareConfig

    cfg = load_stage_config(PrepareConfig, "prepare", params_path=params, overrides=overrides)
    run_prepare(cfg, echo=typer.echo)


@app.command()
@user_errors
def explore(
    params: Optional[Path] = ParamsOpt,
    overrides: list[str] = SetOpt,
    num_workers: int = typer.Option(1, "--num-workers", min=1, help="Independent jobs filling one bank."),
    worker_index: int = typer.Option(0, "--worker-index", min=0, help="This job's index in 0..N-1."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and the per-GPU memory estimate; "
                                 "load no model and no hub dataset."),
) -> None:
    """Stage 1: fill the rollout bank with explorer samples and cached rewards (resumable)."""
    from pipeline.bank.inspect import bank_info, format_info
    from pipeline.bank.reader import BankReader
    from pipeline.config import load_stage_config
    from stage1_explore.config import ExploreConfig
    from stage1_explore.explore import run_explore

    cfg = load_stage_config(ExploreConfig, "explore", params_path=params, overrides=overrides)
    if dry_run:
        from stage1_explore.plan import dry_run as explore_dry_run

        explore_dry_run(cfg, worker_index=worker_index, num_workers=num_workers, echo=typer.echo)
        return
    run_explore(cfg, worker_index=worker_index, num_workers=num_workers, echo=typer.echo)
    typer.echo(format_info(bank_info(BankReader.open(cfg.bank))))


bank_app = typer.Typer(no_args_is_help=True, help="Inspect, check, import, export and publish a rollout bank.")
app.add_typer(bank_app, name="bank")


@bank_app.command("info")
@user_errors
def bank_info_cmd(path: str = typer.Argument(..., help="Bank directory or pyarrow filesystem URI."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Counts, explorer, sampling, pass-rate histogram, the explorer's pass@k, lengths."""
    import json

    from pipeline.bank.inspect import bank_info, format_info
    from pipeline.bank.reader import BankReader

    info = bank_info(BankReader.open(path))
    typer.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@bank_app.command("verify")
@user_errors
def bank_verify_cmd(path: str = typer.Argument(..., help="Bank directory or pyarrow filesystem URI."),
                    samples_per_prompt: Optional[int] = typer.Option(
                        None, "--samples-per-prompt", "-m", help="Also require exactly M rows per prompt.")) -> None:
    """Schema, counts per prompt, duplicates, token/log-prob lengths, manifests vs shards."""
    from pipeline.bank.inspect import verify_bank
    from pipeline.bank.store import open_bank

    files = open_bank(path)
    problems = verify_bank(files, samples_per_prompt)
    for line in problems:
        typer.echo(f"FAIL {line}", err=True)
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"ok: {files.rows} rows in {len(files.shards)} shards")


@bank_app.command("import")
@user_errors
def bank_import_cmd(
    source: Path = typer.Argument(..., help="The authors' rollouts: JSONL, one record per response.", dir_okay=False),
    out: str = typer.Option(..., "--out", "-o", help="The new bank (directory or filesystem URL)."),
    prompts: str = typer.Option(..., "--prompts", help="The prompt set the explorer ran on (file or hub id; "
                                "its gold answers re-score every response, matched on prompt_id)."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="The explorer's tokenizer (directory or hub id)."),
    template: str = typer.Option(..., "--template", help="The template the prompts were rendered with "
                                 "(auto | chat | plain | a format string with {question})."),
    explorer: str = typer.Option(..., "--explorer", help="The explorer's name (hub id), recorded in bank.json."),
    revision: Optional[str] = typer.Option(None, "--revision", help="The explorer's revision, recorded."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling settings, recorded."),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Also: a response this long "
                                                 "without a finish_reason counts as truncated."),
    scoring_workers: int = typer.Option(2, "--scoring-workers", min=0),
) -> None:
    """Turn the authors' JSONL rollouts into a bank, re-scored with this repository's verifier."""
    from pipeline.bank.interop import import_authors_jsonl
    from pipeline.data import load_problems
    from pipeline.models import load_tokenizer

    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens}
    import_authors_jsonl(source, out, problems=load_problems(prompts), tokenizer=load_tokenizer(tokenizer),
                         template=template, explorer=explorer, revision=revision, sampling=sampling,
                         scoring_workers=scoring_workers, echo=typer.echo)


@bank_app.command("export")
@user_errors
def bank_export_cmd(path: str = typer.Argument(..., help="Bank directory or filesystem URL."),
                    out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write.", dir_okay=False),
                    fmt: str = typer.Option("authors-jsonl", "--format", help="authors-jsonl (the only format).")) -> None:
    """Write a bank as the authors' JSONL rollouts (one record per response)."""
    from pipeline.bank.interop import FORMAT, export_authors_jsonl

    if fmt != FORMAT:
        raise UserError(f"--format {fmt!r}: the one export format is {FORMAT}")
    done = export_authors_jsonl(path, out)
    typer.echo(f"{out}: {done['rows']} records from {done['shards']} shards of {path}")


@bank_app.command("card")
@user_errors
def bank_card_cmd(path: str = typer.Argument(..., help="Bank directory or filesystem URL."),
                  license: str = typer.Option("other", "--license", help="The Hub licence id (default: the "
                                              "placeholder `other`)."),
                  name: Optional[str] = typer.Option(None, "--name", help="pretty_name of the dataset.")) -> None:
    """Write the bank's README.md dataset card (Hub YAML header: data files, features, identity)."""
    from pipeline.bank.card import write_card
    from pipeline.bank.store import open_bank

    files = open_bank(path)
    typer.echo(f"wrote {write_card(files, license=license, pretty_name=name)} ({files.rows} rows, "
               f"{len(files.shards)} shards); upload: huggingface-cli upload OWNER/NAME {path} . --repo-type dataset")


@app.command()
@user_errors
def train(params: Optional[Path] = ParamsOpt, overrides: list[str] = SetOpt,
          resume: bool = typer.Option(False, "--resume", help="Continue from out_dir's latest checkpoint."),
          progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and the per-GPU memory estimate; "
                                       "load no model, prompts or bank.")) -> None:
    """Stage 2: GRPO on the learner, mixing bank rollouts at an annealed rate (S2L-PO)."""
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig
    from stage2_train.trainer import run_train

    cfg = load_stage_config(TrainConfig, "train", params_path=params, overrides=overrides)
    if dry_run:
        from stage2_train.plan import dry_run as train_dry_run

        train_dry_run(cfg, echo=typer.echo)
        return
    run_train(cfg, resume=resume, echo=typer.echo, progress=progress)


@app.command()
@user_errors
def subset(source: str = typer.Argument(..., help="Problems file (.jsonl/.parquet) or hub id."),
           out: Path = typer.Argument(..., help="JSONL file to write."),
           flag: str = typer.Option(..., "--flag", help="Boolean field to stratify on, e.g. flawed."),
           fraction: float = typer.Option(..., "--fraction", help="Share of flagged problems in the subset."),
           seed: int = typer.Option(0, "--seed")) -> None:
    """Write a subset keeping every flagged problem and enough others for the given share."""
    from pipeline.data import load_problems, stratified_subset, write_problems_jsonl

    chosen = stratified_subset(load_problems(source), flag=flag, fraction=fraction, seed=seed)
    write_problems_jsonl(chosen, out)
    typer.echo(f"{out}: {len(chosen)} problems, {sum(bool(p.meta.get(flag)) for p in chosen)} with {flag}")


study_app = typer.Typer(no_args_is_help=True, help="Run a study of train arms × seeds, and report it.")
app.add_typer(study_app, name="study")


@study_app.command("run")
@user_errors
def study_run(name: str = typer.Argument(..., help="The study: section study_<NAME> of params.yaml."),
              params: Optional[Path] = ParamsOpt, overrides: list[str] = SetOpt,
              only: list[str] = typer.Option([], "--only", help="Run only this arm (repeatable).")) -> None:
    """Run every arm × seed of a study (resumable), then write its report."""
    from stage2_train.report import write_report
    from stage2_train.study import run_study

    cfg = _study_config(name, params, overrides)
    if only:
        import dataclasses

        cfg = dataclasses.replace(cfg, only=tuple(only))
    run_study(cfg, params=str(params) if params else None, echo=typer.echo)
    typer.echo(write_report(cfg.out_root, baseline=cfg.baseline, title=cfg.title))


@study_app.command("one")
@user_errors
def study_one(name: str = typer.Argument(..., help="The study: section study_<NAME> of params.yaml."),
              arm: str = typer.Argument(..., help="One of the study's arms."),
              seed: int = typer.Argument(..., help="One of the study's seeds."),
              params: Optional[Path] = ParamsOpt, overrides: list[str] = SetOpt,
              threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all)."),
              progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar.")) -> None:
    """Train one arm × seed of a study in the foreground (one DVC stage per run); resumes a started run."""
    from stage2_train.study import run_one

    cfg = _study_config(name, params, overrides)
    out = run_one(cfg, arm, seed, params=str(params) if params else None, threads=threads, progress=progress)
    typer.echo(f"{name}/{arm}/seed{seed}: done in {out}")


def _study_config(name: str, params: Optional[Path], overrides: list[str]):
    from pipeline.config import load_params, load_stage_config
    from stage2_train.study import StudyConfig

    section = f"study_{name}"
    raw = load_params(params or Path("params.yaml")) if (params or Path("params.yaml").is_file()) else {}
    if section not in raw:
        studies = sorted(k.removeprefix("study_") for k in raw if k.startswith("study_"))
        raise UserError(f"no section {section} in {params or 'params.yaml'}; studies defined there: {studies}")
    return load_stage_config(StudyConfig, section, params_path=params, overrides=overrides)


@study_app.command("report")
@user_errors
def study_report(root: Path = typer.Argument(..., help="The study's out_root."),
                 baseline: str = typer.Option("grpo", help="Arm to compare against."),
                 title: str = typer.Option("", help="Figure title."),
                 out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the report "
                                                    "(default: the study's out_root)."),
                 arms: list[str] = typer.Option([], "--arm", help="Report only this arm (repeatable).")) -> None:
    """Tables (mean ± std over seeds) and curves vs steps and vs online tokens."""
    from stage2_train.report import write_report

    typer.echo(write_report(root, baseline=baseline, title=title, out_dir=out, only=tuple(arms)))


@study_app.command("compare")
@user_errors
def study_compare(roots: list[Path] = typer.Argument(..., help="The out_root of each family's study."),
                  baseline: str = typer.Option("grpo", help="Arm every other arm is paired against."),
                  out: Path = typer.Option(Path("data/study/families"), "--out", "-o",
                                           help="Where to write compare.md, compare.json and compare.png.")) -> None:
    """Conclusions across families: each arm over all runs and paired against the baseline, per family."""
    from stage2_train.compare import write_comparison

    typer.echo(write_comparison(roots, baseline=baseline, out_dir=out))


@app.command()
@user_errors
def evaluate(params: Optional[Path] = ParamsOpt, overrides: list[str] = SetOpt,
             dry_run: bool = typer.Option(False, "--dry-run", help="Check the config, model path and benchmark "
                                          "files and print the plan; load no model."),
             progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar.")) -> None:
    """pass@k of a model (directory, hub id or LoRA adapter) on benchmark files and the testbed's test split."""
    from pipeline.config import load_stage_config
    from pipeline.evaluate.config import EvaluateConfig
    from pipeline.evaluate.run import run_evaluate

    cfg = load_stage_config(EvaluateConfig, "evaluate", params_path=params, overrides=overrides)
    run_evaluate(cfg, dry_run=dry_run, progress=progress, echo=typer.echo)


@app.command()
@user_errors
def rehearse(params: Path = typer.Option(..., "--params", "-p", dir_okay=False, help="The recipe to rehearse."),
             out: Path = typer.Option(Path("data/rehearse"), "--out", "-o", help="Working directory (wiped first)."),
             tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Directory of the real tokenizer, "
                                                     "when neither a model directory nor the hub has it."),
             models: list[str] = typer.Option([], "--model", metavar="ID=DIR", help="A local directory holding "
                                              "model ID's config and tokenizer (repeatable)."),
             prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file for explore and train, "
                                                   "in place of the recipe's (e.g. when it is a hub dataset "
                                                   "and this machine is offline).")) -> None:
    """Run a recipe end to end on this CPU with tiny random stand-ins of its models (same architecture,
    tokenizer, chat template and stop ids), then print one report; exit 1 if anything failed."""
    from pipeline.rehearse.collect import collect
    from pipeline.rehearse.run import check_recipe_file, format_report, rehearse as run_rehearsal, write_summary

    check_recipe_file(params)
    local = {}
    for item in models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--model {item!r}: expected ID=DIR, e.g. --model Qwen/Qwen3-8B-Base=models/Qwen3-8B-Base")
        local[name] = path
    result = run_rehearsal(params, out=out, tokenizer=tokenizer, local_models=local, prompts=prompts, echo=typer.echo)
    import yaml

    report = format_report(result, **collect(result, yaml.safe_load((result.out / "rehearsal.yaml").read_text())))
    write_summary(result, report)
    typer.echo(report)
    if not report.splitlines()[-1].startswith("REHEARSAL PASSED"):
        raise typer.Exit(code=1)


@app.command()
@user_errors
def diversity(runs: list[str] = typer.Argument(..., metavar="[LABEL=]DIR...",
                                               help="out_dirs of `s2lpo evaluate` runs, optionally labelled."),
              out: Path = typer.Option(..., "--out", "-o", help="Directory for the JSON, CSVs and PNG."),
              count: str = typer.Option("answer", "--count", metavar="answer|testbed-steps",
                                        help="Which correct samples count as solutions: the verifier's verdict, "
                                        "or on the testbed also every partial sum.")) -> None:
    """pass@k curves side by side, where they cross, and distinct correct solutions per problem.

    A command of its own rather than an evaluate mode: it compares several models, each
    evaluated (and cached) by its own `evaluate` run, and reads only their results — no
    model is loaded, so it re-runs in seconds when a model is added.
    """
    from pipeline.evaluate.diversity import Counting
    from pipeline.evaluate.diversity_report import format_report, parse_run, write_report

    try:
        counting = Counting(count)
    except ValueError:
        raise UserError(f"--count {count!r}: use one of {', '.join(c.value for c in Counting)}") from None
    report = write_report([parse_run(arg) for arg in runs], str(out), counting=counting)
    typer.echo(format_report(report))
    typer.echo(f"wrote {out}/diversity.json, passk_curves.csv, distinct_correct.csv, diversity.png")


if __name__ == "__main__":  # `python -m pipeline.cli`; vLLM spawns processes, so keep the guard
    sys.exit(app())
