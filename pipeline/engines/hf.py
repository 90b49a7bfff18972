"""Hugging Face `generate` engine: batched, KV-cached, left-padded sampling.

The CPU default for the tiny testbed models (faster than vLLM at ~1M parameters on
this hardware) and a reference implementation everywhere else. Prompts are
processed in chunks of at most `batch_size` sequences (prompts × n); the seed is
set once per `generate` call, so a call is reproducible for a given chunking.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.engines.base import FINISH_LENGTH, FINISH_STOP, Completion, SamplingParams
from pipeline.engines.penalties import presence_processors


class HFEngine:
    """Sample from a `transformers` causal LM held in this process."""

    def __init__(self, model, tokenizer, *, batch_size: int = 1024) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
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
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None,
                max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
                pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id,
                return_dict_in_generate=True, output_logits=True,
                logits_processor=presence_processors(params.presence_penalty, prompt_width=width),
            )
        new_tokens = gen.sequences[:, width:]
        logits = torch.stack(gen.logits, dim=1).float()  # raw logits: (B·n, T, vocab)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        completions = [self._completion(new_tokens[i], logprobs[i]) for i in range(new_tokens.shape[0])]
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _completion(self, tokens, logprobs) -> Completion:
        eos = self.tokenizer.eos_token_id
        ids = tokens.tolist()
        if eos in ids:
            length, reason = ids.index(eos) + 1, FINISH_STOP
        else:
            length, reason = len(ids), FINISH_LENGTH
        ids = ids[:length]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(tuple(ids), text, tuple(logprobs[:length].tolist()), reason)
