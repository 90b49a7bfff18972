"""Presence penalty for Hugging Face `generate`, defined exactly as vLLM defines it.

vLLM (and the OpenAI API) subtract `presence_penalty` once from the logit of every
token that already occurs in the *generated* text so far; the prompt does not count,
and a token seen three times is penalised as much as one seen once:

    logits'[b, v] = logits[b, v] − penalty · 1[v ∈ response_b]

This differs from HF's built-in `repetition_penalty` (multiplicative, prompt included),
so the HF engine uses `PresencePenaltyProcessor`. `generate` runs custom processors
before its temperature/top-k/top-p warpers, the same order as vLLM. The log-probs an
engine reports stay those of the raw, unpenalised distribution (see `Completion`).
"""

from __future__ import annotations


class PresencePenaltyProcessor:
    """A `transformers` logits processor: subtract `penalty` from every token present in
    the response so far.

    Args:
        penalty: amount subtracted from the logit of each present token (> 0 discourages
            repeats, < 0 encourages them).
        prompt_width: number of leading columns of `input_ids` that belong to the
            (left-padded) prompt; only columns after it are the response.

    Call shapes: `input_ids` (B, prompt_width + t) token ids, `scores` (B, V) logits of
    the next token; returns a new (B, V) tensor and leaves `scores` untouched.
    """

    def __init__(self, penalty: float, *, prompt_width: int) -> None:
        self.penalty = float(penalty)
        self.prompt_width = int(prompt_width)

    def __call__(self, input_ids, scores):
        import torch

        response = input_ids[:, self.prompt_width :]
        if response.shape[1] == 0 or self.penalty == 0.0:
            return scores
        present = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        present.scatter_(1, response, True)
        return scores - self.penalty * present.to(scores.dtype)


def presence_processors(penalty: float, *, prompt_width: int):
    """A `LogitsProcessorList` holding the penalty, or None when the penalty is 0 (so
    sampling without one is bit-identical to plain `generate`)."""
    if penalty == 0.0:
        return None
    from transformers import LogitsProcessorList

    return LogitsProcessorList([PresencePenaltyProcessor(penalty, prompt_width=prompt_width)])
