"""`s2lpo evaluate`: sample n responses per problem, score them, write pass@k and results.

Order of work: `build_plan` checks everything a user can get wrong (the model path,
every benchmark file and its answers, k ≤ n, the sampling values) without loading a
model — `--dry-run` stops there and prints the plan. Then the model is loaded once,
each benchmark is sampled in calls of about `generate_batch_size` sequences (one progress-bar
update per call, seeded by (seed, benchmark, first problem) so a run repeats), scored
by the verifier in worker processes with a hard timeout, and the outputs are written,
each atomically: `results.parquet`, `config.json`, `summary.json` and `passk.csv` (the
DVC views), then `metrics.json`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pipeline.data import Problem
from pipeline.engines import SamplingParams
from pipeline.errors import UserError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.results import (CONFIG_FILE, METRICS_FILE, PASSK_FILE, RESULTS_FILE, SUMMARY_FILE, ProblemResult,
                                       benchmark_metrics, format_metrics, passk_csv, results_table, subset_masks,
                                       summary_metrics)
from pipeline.evaluate.source import ModelSource, resolve_source
from pipeline.memory_check import refuse_if_unfit, sampling_report

_HUB_DATASET = "hub dataset, loaded at run time"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark to run: its name, source and (for local files) its problems."""

    name: str
    path: str
    problems: Optional[tuple[Problem, ...]]  # None: a hub dataset not loaded by a dry run


@dataclass(frozen=True)
class Plan:
    """Everything `run_evaluate` will do, resolved and checked."""

    cfg: EvaluateConfig
    source: ModelSource
    benchmarks: tuple[Benchmark, ...]
    sampling: SamplingParams
    ks: tuple[int, ...]


def build_plan(cfg: EvaluateConfig, *, load_hub: bool = True) -> Plan:
    """Resolve the model and load every benchmark; `load_hub=False` skips hub datasets."""
    source = resolve_source(cfg.model, base_model=cfg.base_model)
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise UserError(f"evaluate.out_dir {cfg.out_dir}: is a file; set out_dir to a directory")
    benchmarks = []
    for name, path in cfg.benchmark_files.items():
        local = Path(path).exists()
        problems = None
        if local or load_hub:
            problems = tuple(cfg.load_problems(path))
        benchmarks.append(Benchmark(name, path, problems))
    return Plan(cfg, source, tuple(benchmarks), cfg.sampling(), tuple(cfg.k_values))


def format_plan(plan: Plan) -> str:
    cfg, s = plan.cfg, plan.sampling
    lines = [f"model      {plan.source.describe()}", f"tokenizer  {plan.source.tokenizer}",
             f"engine     {cfg.engine.value}   dtype {cfg.dtype}   template {cfg.template!r}",
             f"sampling   preset {cfg.preset.value}: temperature {s.temperature}, top_p {s.top_p}, top_k {s.top_k}, "
             f"presence_penalty {s.presence_penalty}, max_new_tokens {s.max_new_tokens}, seed {s.seed}",
             f"pass@k     n = {s.n} samples per problem, k = {', '.join(map(str, plan.ks))}"]
    total = 0
    for b in plan.benchmarks:
        if b.problems is None:
            lines.append(f"benchmark  {b.name:<10} {b.path} ({_HUB_DATASET})")
            continue
        masks = subset_masks(b.problems)
        subsets = ", ".join(f"{k} {int(m.sum())}" for k, m in masks.items())
        lines.append(f"benchmark  {b.name:<10} {b.path}: {len(b.problems)} problems ({subsets})")
        total += len(b.problems) * s.n
    lines.append(f"generate   {total} responses, at most {total * s.max_new_tokens:,} new tokens")
    out = Path(cfg.out_dir)
    lines.append(f"outputs    {out / METRICS_FILE}, {out / RESULTS_FILE}, {out / CONFIG_FILE}")
    return "\n".join(lines)


def memory_report(plan: Plan, *, dry_run: bool):
    """The per-GPU estimate of sampling `plan`'s model (an adapter's base), and its refusal if it cannot fit."""
    from pipeline.engines import EngineKind, resolve_engine_kind

    cfg, adapter = plan.cfg, plan.source.kind.is_adapter
    return sampling_report(plan.source.base if adapter else plan.source.model,
                           key="evaluate.base_model" if adapter else "evaluate.model", stage="evaluate",
                           revision=None if adapter else cfg.revision,
                           vllm=resolve_engine_kind(cfg.engine) is EngineKind.VLLM, dtype=cfg.dtype,
                           share=cfg.gpu_memory_utilization, tp=cfg.tensor_parallel_size,
                           max_model_len=cfg.max_model_len, max_new_tokens=cfg.max_new_tokens,
                           hf_batch=cfg.generate_batch_size, planned=cfg.gpus, dry_run=dry_run)


def run_evaluate(cfg: EvaluateConfig, *, dry_run: bool = False, progress: bool = True, echo=print) -> dict:
    """Evaluate `cfg.model`; returns the metrics (or, for a dry run, {} after printing the plan)."""
    plan = build_plan(cfg, load_hub=not dry_run)
    report = memory_report(plan, dry_run=dry_run)  # config.json only: no weights
    if dry_run:
        echo(format_plan(plan))
        lines, error = report or (["memory     no GPU seen and none declared: set evaluate.gpus.memory_gb"], None)
        echo("\n".join(lines))
        if error is not None:
            raise error
        return {}
    refuse_if_unfit(report)
    from tqdm import tqdm

    from pipeline.evaluate.source import open_engine
    from pipeline.models import load_tokenizer
    from pipeline.scoring_pool import ScoringPool

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    start = time.time()
    tokenizer = load_tokenizer(plan.source.tokenizer, revision=None if plan.source.kind.is_adapter else cfg.revision,
                               trust_remote_code=cfg.trust_remote_code)
    total = sum(len(b.problems) for b in plan.benchmarks) * cfg.samples
    results: dict[str, list[ProblemResult]] = {}
    with open_engine(cfg, plan.source, tokenizer) as engine, \
            ScoringPool(cfg.scoring_workers, timeout_s=cfg.score_timeout_s) as pool, \
            tqdm(total=total, desc=f"evaluate {cfg.label}", unit="sample", disable=not progress,
                 dynamic_ncols=True) as bar:
        for bench in plan.benchmarks:
            results[bench.name] = sample_benchmark(engine, tokenizer, bench, cfg, scorer=pool.score,
                                                   on_samples=bar.update)
    metrics = {name: benchmark_metrics(rs, plan.ks) for name, rs in results.items()}
    metrics["wall_s"] = round(time.time() - start, 1)
    write_outputs(plan, results, metrics)
    echo(format_metrics(metrics))
    echo(f"wrote {Path(cfg.out_dir) / METRICS_FILE} and {RESULTS_FILE} in {metrics['wall_s']} s")
    return metrics


def sample_benchmark(engine, tokenizer, bench: Benchmark, cfg: EvaluateConfig, *, scorer: Callable,
                     on_samples: Callable[[int], object] = lambda k: None) -> list[ProblemResult]:
    """`cfg.samples` scored responses for every problem of `bench`, in calls of about
    `cfg.generate_batch_size` sequences."""
    from pipeline.prompts import encode_prompts, render_problems

    problems = list(bench.problems)
    texts = render_problems(tokenizer, problems, template=cfg.template)
    prompt_ids = encode_prompts(tokenizer, texts, template=cfg.template)
    per_call = max(1, cfg.generate_batch_size // cfg.samples)
    out: list[ProblemResult] = []
    for first in range(0, len(problems), per_call):
        chunk = problems[first : first + per_call]
        params = cfg.sampling(seed=chunk_seed(cfg.seed, bench.name, first))
        groups = engine.generate(prompt_ids[first : first + per_call], params)
        flat = [c for group in groups for c in group]
        scores = scorer([c.text for c in flat], [p.answer for p in chunk for _ in range(params.n)])
        for i, problem in enumerate(chunk):
            cs, ss = flat[i * params.n : (i + 1) * params.n], scores[i * params.n : (i + 1) * params.n]
            out.append(ProblemResult(problem, tuple(c.text for c in cs), tuple(s.extracted for s in ss),
                                     tuple(bool(s.correct) for s in ss), tuple(len(c.token_ids) for c in cs),
                                     tuple(c.finish_reason for c in cs), sum(bool(s.timed_out) for s in ss)))
        on_samples(len(flat))
    return out


def chunk_seed(seed: int, benchmark: str, first: int) -> int:
    """A sampling seed fixed by the run seed, the benchmark and the call's first problem."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{benchmark}:{first}".encode()).digest()[:4], "big")


def write_outputs(plan: Plan, results: dict[str, list[ProblemResult]], metrics: dict) -> None:
    """results.parquet, config.json, metrics.json — each written to a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import to_dict
    from pipeline.fs import atomic_write, resolve, write_json

    cfg = plan.cfg
    table = pa.concat_tables([results_table(cfg.label, name, rs) for name, rs in results.items()])
    loc = resolve(cfg.out_dir)
    atomic_write(loc, RESULTS_FILE, lambda stream: pq.write_table(table, stream, compression="zstd"))
    record = {"label": cfg.label, "model": plan.source.describe(), "config": to_dict(cfg),
              "sampling": {k: getattr(plan.sampling, k) for k in plan.sampling.__dataclass_fields__}}
    write_json(loc, CONFIG_FILE, record)
    summary = (json.dumps(summary_metrics(metrics), indent=2) + "\n").encode()
    atomic_write(loc, SUMMARY_FILE, lambda stream: stream.write(summary))
    curves = passk_csv(metrics).encode()
    atomic_write(loc, PASSK_FILE, lambda stream: stream.write(curves))
    payload = (json.dumps(metrics, indent=2) + "\n").encode()  # unsorted: k ascending, as computed
    atomic_write(loc, METRICS_FILE, lambda stream: stream.write(payload))
