"""`s2lpo explore`: sample the explorer M times per prompt and append complete shards.

Resumable by construction: the bank's index says which (prompt, sample_index) pairs
exist; only the missing ones are generated, a shard at a time, each shard committed
atomically (on a writer thread, while the next shard generates). Worker I of N handles
the prompts whose stable hash is I modulo N.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from pipeline.bank.background import BackgroundWriter
from pipeline.bank.reader import BankReader
from pipeline.bank.schema import BankRecord, SCHEMA_VERSION
from pipeline.bank.store import BankWriter, check_claim, fingerprint, open_bank
from pipeline.data import Problem, problem_set_fingerprint
from pipeline.engines import Engine
from pipeline.engines.base import FINISH_LENGTH, sample_seed
from pipeline.errors import UserError
from pipeline.rewards import apply_truncated_reward
from stage1_explore.config import ExploreConfig

IDENTITY_SAMPLING = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
LOGPROBS_SAMPLING = "sampling"  # bank.json `logprobs`: under the distribution the tokens were sampled from
SEEDS_PER_SAMPLE = "per-sample"  # bank.json `seeds`: one seed per (prompt id, sample index) (`sample_seed`)


@dataclass(frozen=True)
class Job:
    """One prompt's missing samples."""

    problem: Problem
    sample_indices: tuple[int, ...]


def worker_of(prompt_id: str, num_workers: int) -> int:
    """Stable partition of prompts across workers (same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:8], "big") % num_workers


def missing_jobs(problems: list[Problem], have: dict[str, set[int]], m: int) -> list[Job]:
    """Per prompt, the sample indices in 0..m-1 the bank does not hold yet."""
    jobs = []
    for p in problems:
        todo = tuple(i for i in range(m) if i not in have.get(p.id, ()))
        if todo:
            jobs.append(Job(p, todo))
    return jobs


def bank_identity(cfg: ExploreConfig, problems: list[Problem], tokenizer, stop_token_ids) -> dict:
    """Everything that determines the bank's contents, except M (which may grow). The
    stop set is part of the sampling; `logprobs: sampling` says the log-prob column is under
    the sampling distribution (pipeline.engines.Completion; older banks: the raw one)."""
    from pipeline.models import model_identity, tokenizer_fingerprint
    from pipeline.prompts import template_fingerprint
    from pipeline.verifier import VERIFIER_NAME, VERIFIER_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "explorer": model_identity(cfg.explorer, cfg.revision),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "prompts": {"fingerprint": problem_set_fingerprint(problems), "count": len(problems)},
        "template": {"text": cfg.template, "fingerprint": template_fingerprint(tokenizer, cfg.template)},
        "sampling": {**{k: getattr(cfg, k) for k in IDENTITY_SAMPLING}, "stop_token_ids": list(stop_token_ids)},
        "verifier": {"name": VERIFIER_NAME, "version": VERIFIER_VERSION},
        "truncated_reward": cfg.truncated_reward.value,
        "logprobs": LOGPROBS_SAMPLING,
        "seeds": SEEDS_PER_SAMPLE,
    }


def existing_samples(uri: str) -> dict[str, set[int]]:
    """(prompt → sample indices) over every complete shard of every worker."""
    reader = BankReader(open_bank(uri))
    have: dict[str, set[int]] = {}
    for pid, idx in zip(reader.prompt_ids, reader.sample_index):
        have.setdefault(pid, set()).add(int(idx))
    return have


def run_explore(cfg: ExploreConfig, *, worker_index: int = 0, num_workers: int = 1, echo=print) -> dict:
    """Fill this worker's share of the bank; returns a summary of what was done."""
    from pipeline.engines.stops import model_stop_ids
    from pipeline.models import load_tokenizer
    from stage1_explore.plan import check_memory

    check_memory(cfg)  # before anything loads: refuse what cannot fit this worker's GPU
    problems = cfg.load_problems(cfg.prompts)
    tokenizer = load_tokenizer(cfg.explorer, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    stops = model_stop_ids(cfg.explorer, tokenizer, cfg.stop_token_ids, revision=cfg.revision,
                           trust_remote_code=cfg.trust_remote_code)
    identity = bank_identity(cfg, problems, tokenizer, stops)
    # refuse a bank of other settings now, but write bank.json only once the engine has
    # loaded: an explorer that fails to load leaves no bank claimed with its settings
    exists = check_claim(cfg.bank, identity, worker_index=worker_index, num_workers=num_workers)
    mine = [p for p in problems if worker_of(p.id, num_workers) == worker_index]
    jobs = missing_jobs(mine, existing_samples(cfg.bank) if exists else {}, cfg.samples_per_prompt)
    todo = sum(len(j.sample_indices) for j in jobs)
    echo(f"bank {cfg.bank} [{fingerprint(identity)}]: worker {worker_index}/{num_workers} owns {len(mine)} "
         f"prompts; {todo} of {len(mine) * cfg.samples_per_prompt} rollouts to generate")
    if not jobs:
        return {"generated": 0, "tokens": 0, "seconds": 0.0}
    engine = make_engine(cfg, tokenizer, stops)
    writer = BankWriter(cfg.bank, identity, worker_index=worker_index, num_workers=num_workers)
    return _fill(cfg, jobs, engine, tokenizer, writer, echo=echo)


def make_engine(cfg: ExploreConfig, tokenizer, stop_token_ids) -> Engine:
    from pipeline.engines import EngineKind, resolve_engine_kind

    if resolve_engine_kind(cfg.engine) is EngineKind.VLLM:
        from pipeline.engines.vllm import VLLMEngine

        return VLLMEngine(cfg.explorer, revision=cfg.revision, dtype=cfg.dtype, seed=cfg.seed,
                          gpu_memory_utilization=cfg.gpu_memory_utilization,
                          tensor_parallel_size=cfg.tensor_parallel_size, trust_remote_code=cfg.trust_remote_code,
                          stop_token_ids=stop_token_ids, tokenizer=tokenizer)
    from pipeline.engines.hf import HFEngine
    from pipeline.models import load_causal_lm

    model = load_causal_lm(cfg.explorer, revision=cfg.revision, dtype=cfg.dtype,
                           trust_remote_code=cfg.trust_remote_code).eval()
    return HFEngine(model, tokenizer, batch_size=cfg.generate_batch_size, stop_token_ids=stop_token_ids)


def _fill(cfg: ExploreConfig, jobs: list[Job], engine: Engine, tokenizer, writer: BankWriter, *, echo) -> dict:
    from tqdm import tqdm

    from pipeline.prompts import encode_prompts, render_problems
    from pipeline.scoring_pool import ScoringPool

    total = sum(len(j.sample_indices) for j in jobs)
    start, tokens, done = time.time(), 0, 0
    # shards are encoded and committed on a writer thread while the next chunk generates
    with ScoringPool(cfg.scoring_workers, timeout_s=cfg.score_timeout_s) as pool, BackgroundWriter(writer) as shards, \
            tqdm(total=total, desc="explore", unit="rollout", dynamic_ncols=True) as bar:
        for first in range(0, len(jobs), cfg.prompts_per_shard):
            chunk = jobs[first : first + cfg.prompts_per_shard]
            texts = render_problems(tokenizer, [j.problem for j in chunk], template=cfg.template)
            prompt_ids = encode_prompts(tokenizer, texts, template=cfg.template)
            records = _sample_and_score(cfg, chunk, texts, prompt_ids, engine, pool)
            shards.submit(records)
            tokens += sum(r.response_length for r in records)
            done += len(records)
            bar.update(len(records))
            bar.set_postfix(tok_s=f"{tokens / (time.time() - start):.0f}", timeouts=pool.timeouts)
    seconds = time.time() - start
    echo(f"generated {done} rollouts, {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.0f} tokens/s)")
    return {"generated": done, "tokens": tokens, "seconds": seconds}


def _sample_and_score(cfg, chunk: list[Job], texts, prompt_ids, engine: Engine, pool) -> list[BankRecord]:
    """Generate each job's missing samples (grouped by how many are missing) and score them."""
    by_count: dict[int, list[int]] = {}
    for k, job in enumerate(chunk):
        by_count.setdefault(len(job.sample_indices), []).append(k)
    completions: dict[int, list] = {}
    for n, ks in by_count.items():
        seed = _chunk_seed(cfg.seed, chunk[ks[0]])
        params = cfg.sampling_params(n=n, seed=seed)
        seeds = [job_seeds(cfg.seed, chunk[k]) for k in ks]
        for k, group in zip(ks, engine.generate([prompt_ids[k] for k in ks], params, seeds=seeds)):
            completions[k] = group
    flat = [(k, s, c) for k in range(len(chunk)) for s, c in zip(chunk[k].sample_indices, completions[k])]
    scores = [apply_truncated_reward(sc, truncated=c.finish_reason == FINISH_LENGTH, policy=cfg.truncated_reward)
              for sc, (_, _, c) in zip(pool.score([c.text for _, _, c in flat],
                                                  [chunk[k].problem.answer for k, _, _ in flat]), flat)]
    return [BankRecord(prompt_id=chunk[k].problem.id, sample_index=s, prompt=texts[k],
                       prompt_token_ids=list(prompt_ids[k]), response=c.text,
                       response_token_ids=list(c.token_ids), logprobs=list(c.logprobs), reward=sc.reward,
                       correct=sc.correct, extracted_answer=sc.extracted, finish_reason=c.finish_reason,
                       response_length=len(c.token_ids))
            for (k, s, c), sc in zip(flat, scores)]


def job_seeds(seed: int, job: Job) -> list[int]:
    """One seed per (prompt id, sample index): vLLM draws each bank row from its own stream,
    the same whichever chunk, worker or resume generates it."""
    return [sample_seed(seed, job.problem.id, i) for i in job.sample_indices]


def _chunk_seed(seed: int, first: Job) -> int:
    """The HF engine's seed for a call (one stream per call, see `HFEngine`): fixed by the run
    seed and the chunk's first (prompt, sample), so reruns repeat."""
    key = f"{seed}:{first.problem.id}:{first.sample_indices[0]}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
