"""Supervised fine-tuning of a testbed model on freshly generated demonstrations.

Each step draws `batch_size` new problems (never one of the held-out test
problems), renders `<s>{prompt}{demonstration}</s>` and takes the next-token loss
on the demonstration tokens only (the prompt is context, not target). AdamW with
linear warmup then cosine decay to zero, gradient-norm clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.testbed import task

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTSettings:
    """Optimiser and schedule shared by both members (each member sets its own step count)."""

    batch_size: int = 64
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.98
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0


def lr_at(step: int, steps: int, settings: SFTSettings) -> float:
    """Linear warmup over `warmup_steps`, then cosine from `lr` to 0 at `steps`."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * progress))


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels); labels are -100 outside responses."""
    import torch

    seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (p, seq) in enumerate(zip(prompt_ids, seqs)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(p) : len(seq)] = torch.tensor(seq[len(p) :])
        mask[row, : len(seq)] = 1
    return input_ids, mask, labels


def demonstration_batch(rng: np.random.Generator, n: int, spec: task.TaskSpec, excluded: frozenset):
    """`n` (prompt text, solution text) pairs of fresh problems not in `excluded`."""
    pairs = []
    while len(pairs) < n:
        for nums in task.sample_numbers(rng, n, spec):
            key = tuple(int(v) for v in nums)
            if key in excluded or len(pairs) == n:
                continue
            prompt = task.QUESTION_TEMPLATE.format(question=task.question(key))
            pairs.append((prompt, task.demonstration(key, rng, spec)))
    return pairs


def train_sft(model, tokenizer, *, steps: int, settings: SFTSettings, spec: task.TaskSpec, seed: int,
              excluded: frozenset = frozenset(), progress=None) -> list[float]:
    """Run SFT in place on `model`; returns the per-step training loss."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(settings.beta1, settings.beta2),
                            weight_decay=settings.weight_decay)
    eos = [tokenizer.eos_token_id]
    losses = []
    model.train()
    for step in range(steps):
        pairs = demonstration_batch(rng, settings.batch_size, spec, excluded)
        prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
        responses = tokenizer([s for _, s in pairs], add_special_tokens=False)["input_ids"]
        input_ids, mask, labels = collate(prompts, [r + eos for r in responses], tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, settings)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses
