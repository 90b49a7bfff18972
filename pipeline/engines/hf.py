"""Hugging Face `generate` engine: batched, KV-cached, left-padded sampling.

The CPU default for the tiny testbed models (faster than vLLM at ~1M parameters on
this hardware) and a reference implementation everywhere else. Prompts are
processed in chunks of at most `batch_size` sequences (prompts × n). `generate` draws
every row of a batch from torch's one global stream, so the seed is set once per call
(`params.seed`) and a call is reproducible for a given chunking; the rows are independent
draws of that stream. Per-sample `seeds` are vLLM's (one generator per request) and are
not used here.

The stop set (`pipeline.engines.stops`) defaults to the union of the model's
`generation_config.eos_token_id` and the tokenizer's eos; `generate` stops each row at the
first of them.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.engines.base import FINISH_LENGTH, FINISH_STOP, Completion, SamplingParams
from pipeline.engines.penalties import presence_processors
from pipeline.engines.stops import check_stop_ids, cut_at_stop, response_text, stop_set


class HFEngine:
    """Sample from a `transformers` causal LM held in this process."""

    def __init__(self, model, tokenizer, *, batch_size: int = 1024,
                 stop_token_ids: Sequence[int] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if stop_token_ids is None:
            generation = getattr(model, "generation_config", None)
            stop_token_ids = stop_set(getattr(generation, "eos_token_id", None), tokenizer.eos_token_id)
        self.stop_token_ids = tuple(stop_token_ids)
        check_stop_ids(self.stop_token_ids, tokenizer, where="the HF engine's model")

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Completion]]:
        import torch

        torch.manual_seed(params.seed)
        per_chunk = max(1, self.batch_size // params.n)
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), per_chunk):
            out.extend(self._generate_chunk(prompts[start : start + per_chunk], params))
        return out

    def _generate_chunk(self, prompts, params: SamplingParams) -> list[list[Completion]]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):  # left padding keeps the last prompt token aligned
            input_ids[row, width - len(ids) :] = torch.tensor(list(ids))
            mask[row, width - len(ids) :] = 1
        device = self.model.device  # a learner trained on a GPU samples there
        with torch.inference_mode():
            gen = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=True,
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,  # 0 = no filter
                max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
                pad_token_id=pad, eos_token_id=list(self.stop_token_ids),
                return_dict_in_generate=True, output_scores=True,
                logits_processor=presence_processors(params.presence_penalty, prompt_width=width),
            )
        new_tokens = gen.sequences[:, width:]
        # `scores` are the logits the token was sampled from (penalty, temperature, top-k/top-p
        # applied; filtered tokens -inf); one step at a time, so no (B, T, vocab) copy is made
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1).gather(-1, new_tokens[:, t : t + 1]).squeeze(-1)
                                for t, s in enumerate(gen.scores)], dim=1)
        completions = [self._completion(new_tokens[i].tolist(), logprobs[i].tolist())
                       for i in range(new_tokens.shape[0])]
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _completion(self, ids: list[int], logprobs: list[float]) -> Completion:
        kept, stopped = cut_at_stop(ids, self.stop_token_ids)
        text = response_text(self.tokenizer, kept, stopped=stopped)
        return Completion(kept, text, tuple(logprobs[: len(kept)]), FINISH_STOP if stopped else FINISH_LENGTH)
