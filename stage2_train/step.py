"""One training step, in the order of the paper's Algorithm 1 (METHOD §2):

    α_i ← schedule(i);  per prompt G_w = ⌈α_i·G⌉ bank rows, G_s = G − G_w online
    score all G with one verifier → rewards
    old log-probs (and reference log-probs) from the learner for all G
    Â over the group → PPO-clip + dual clip + k3 KL, token-mean → AdamW (clip 1.0)

`collect_*` build the groups; `update` is the optimisation on a list of groups.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.engines import SamplingParams
from pipeline.errors import UserError
from stage2_train import rl_math
from stage2_train.groups import BankPrompts, plan_groups
from stage2_train.policy import batched_logprobs, pack, token_logprobs
from stage2_train.rollout import Response, assemble, bank_responses, online_responses, sample_online, step_seed


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: the run stops before the optimizer applies it."""


@dataclass
class Timer:
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] += time.perf_counter() - self.t

        return _Span()


@dataclass
class Collected:
    responses: list[Response]
    group_size: int
    online_tokens: int  # every token the learner generated this step (including discarded ones)


def collect(run, step: int, prompts: list[int], *, alpha: float, group_size: int, timer: Timer,
            phase: str = "") -> Collected:
    """Groups of `group_size` mixing ⌈α·size⌉ bank rows with online responses (the paper's
    mixed group at size G; the alternating scheme's bank-only phase is α = 1 at size
    ⌈α·G⌉ and its online-only phase α = 0 at size ⌈(1−α)·G⌉)."""
    cfg, g = run.cfg, group_size
    pids = [run.problems[i].id for i in prompts]
    ids = [run.prompt_token_ids[i] for i in prompts]
    golds = [run.problems[i].answer for i in prompts]
    rng = np.random.default_rng(step_seed(cfg.seed, step, "bank" + phase))
    params = sampling(cfg, step, phase)
    rescue = cfg.bank_prompts is BankPrompts.RESCUE and alpha > 0
    with timer("generate"):
        if rescue:  # the learner's own full group decides which prompts need the explorer
            completions = sample_online(run.engine, ids, [g] * len(ids), params)
    with timer("score"):
        if rescue:
            online = online_responses(completions, ids, golds, run.scorer)
            all_wrong = [not any(r.correct for r in grp) for grp in online]
            plan = plan_groups(pids, run.pool, alpha=alpha, group_size=g, rng=rng, prompts=cfg.bank_prompts,
                               online_all_wrong=all_wrong)
        else:
            plan = plan_groups(pids, run.pool, alpha=alpha, group_size=g, rng=rng)
    if not rescue:
        with timer("generate"):
            completions = sample_online(run.engine, ids, plan.online, params)
        with timer("score"):
            online = online_responses(completions, ids, golds, run.scorer)
    with timer("bank"):
        bank = bank_responses(run.reader, plan.bank_rows, ids, golds, rescore=run.bank_rescorer)
    tokens = sum(len(r.token_ids) for grp in online for r in grp)
    return Collected(assemble(bank, online, keep_online=plan.online, group_size=g), g, tokens)


def sampling(cfg, step: int, phase: str = "") -> SamplingParams:
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          max_new_tokens=cfg.max_new_tokens, seed=step_seed(cfg.seed, step, "online" + phase))


def update(run, collected: Collected, step: int, timer: Timer) -> dict:
    """Old/reference log-probs, advantages, then PPO epochs of mini-batch AdamW steps."""
    cfg, lc = run.cfg, run.cfg.loss
    batch = pack(collected.responses, run.tokenizer.pad_token_id)
    n, g = len(collected.responses), collected.group_size
    rewards = torch.tensor([r.reward for r in collected.responses]).view(n // g, g)
    mask = batch.response_mask
    with timer("logprobs"):
        old = batched_logprobs(run.model, batch, cfg.micro_batch_size)
        ref = run.reference_logprobs(batch) if lc.kl_coef > 0 else None
    online_members = (~batch.from_bank).view(n // g, g)
    adv = rl_math.compute_group_advantages(
        rewards, baseline_mask=online_members if lc.baseline is rl_math.Baseline.ONLINE else None,
        normalize_std=lc.normalize_std).flatten()
    weights = shaped = None
    if lc.bank_correction is rl_math.BankCorrection.TRUNCATED_IS:
        weights = rl_math.compute_truncated_is_weights(old, batch.explorer_logprobs, batch.from_bank, cap=lc.is_cap)
    elif lc.bank_correction is rl_math.BankCorrection.LUFFY:
        shaped = batch.from_bank.unsqueeze(1).expand_as(mask) & (mask > 0)
    sums: dict[str, float] = defaultdict(float)
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, "minibatch"))
    with timer("backward"):
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=gen)
            for mini in order.split(cfg.mini_batch_size):
                _optimizer_step(run, batch.select(mini), old[mini], None if ref is None else ref[mini], adv[mini],
                                None if weights is None else weights[mini], None if shaped is None else shaped[mini],
                                sums, step)
    return _step_stats(collected, rewards, adv, sums)


def _optimizer_step(run, batch, old, ref, adv, weights, shaped, sums, step) -> None:
    cfg, lc = run.cfg, run.cfg.loss
    mask = batch.response_mask
    norm = rl_math.loss_normaliser(mask, lc.aggregation, max_len=cfg.max_new_tokens)
    for micro in torch.arange(mask.shape[0]).split(cfg.micro_batch_size):
        m = mask[micro]
        logp, entropy = token_logprobs(run.model, batch.select(micro), with_entropy=True)
        pl = rl_math.compute_policy_loss(logp, old[micro], adv[micro], m, clip_low=lc.clip_low, clip_high=lc.clip_high,
                                         dual_clip=lc.dual_clip, token_weights=None if weights is None else weights[micro],
                                         shaped=None if shaped is None else shaped[micro], shaping_gamma=lc.luffy_gamma)
        per_token = pl.loss
        if ref is not None:
            kl = rl_math.compute_k3_kl(logp, ref[micro])
            per_token = per_token + lc.kl_coef * kl
            sums["kl"] += float((kl.detach() * m).sum())
        loss = rl_math.aggregate(per_token, m, lc.aggregation, normaliser=norm)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"step {step}: the loss is {loss.item()}; {run.last_checkpoint_note()}")
        loss.backward()
        tokens = float(m.sum())
        sums["tokens"] += tokens
        sums["loss"] += float(loss.detach())
        sums["entropy"] += float((entropy * m).sum())
        sums["clip"] += pl.clip_fraction * tokens
        sums["dual_clip"] += pl.dual_clip_fraction * tokens
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trainable, cfg.grad_clip)
    if not torch.isfinite(grad_norm):
        run.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"step {step}: the gradient norm is {grad_norm.item()}; {run.last_checkpoint_note()}")
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    sums["grad_norm"] += float(grad_norm)
    sums["updates"] += 1


def _step_stats(collected: Collected, rewards: torch.Tensor, adv: torch.Tensor, sums: dict) -> dict:
    rs = collected.responses
    bank = [r for r in rs if r.from_bank]
    online = [r for r in rs if not r.from_bank]
    tokens = max(sums["tokens"], 1.0)
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values
    stats = {
        "groups": rewards.shape[0], "g_w": len(bank) / rewards.shape[0], "g_s": len(online) / rewards.shape[0],
        "reward": float(rewards.mean()), "accuracy": float(np.mean([r.correct for r in rs])),
        "adv/mean": float(adv.mean()), "adv/std": float(adv.std()) if adv.numel() > 1 else 0.0,
        "adv/abs_max": float(adv.abs().max()), "zero_variance_groups": float((spread == 0).float().mean()),
        "loss": sums["loss"] / max(sums["updates"], 1), "kl": sums["kl"] / tokens, "entropy": sums["entropy"] / tokens,
        "clip_fraction": sums["clip"] / tokens, "dual_clip_fraction": sums["dual_clip"] / tokens,
        "grad_norm": sums["grad_norm"] / max(sums["updates"], 1), "updates": int(sums["updates"]),
        "tokens/online_generated": collected.online_tokens,
        "tokens/bank": sum(len(r.token_ids) for r in bank), "tokens/online": sum(len(r.token_ids) for r in online),
        "truncated": float(np.mean([r.truncated for r in rs])),
    }
    for name, part in (("bank", bank), ("online", online)):
        stats[f"{name}/responses"] = len(part)
        stats[f"{name}/reward"] = float(np.mean([r.reward for r in part])) if part else None
        stats[f"{name}/accuracy"] = float(np.mean([r.correct for r in part])) if part else None
        stats[f"{name}/length"] = float(np.mean([len(r.token_ids) for r in part])) if part else None
    return stats
