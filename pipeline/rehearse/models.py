"""Stand-ins: tiny random-weight models of the same architecture and tokenizer as the real ones.

A stand-in is `pipeline.tiny`'s shrunk model of the real config (same `model_type`,
vocabulary size, special-token ids, stop ids in `generation_config.json`, rope settings,
tie setting; 1 layer, hidden 64 by default) saved with the real tokenizer and chat
template, so a recipe runs end to end on a CPU in minutes with the real 151k vocabulary.

A random model almost never samples a stop id (1 in 151,936 per token), so every
response would run to the length cap and the stop path would go untested. The stand-in
therefore carries a *stop bias* (`_shape_logits`): its head gives the stop ids extra
logit through one channel of the residual stream, calibrated so that a response ends
after about `mean_length` tokens at the temperature the recipe samples that model at, the
tokenizer's eos (a chat-templated turn's end) taking two thirds of the stops and
generation_config's ids the rest. Everything else stays random: responses are gibberish
over the real vocabulary, rewards are 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


@dataclass(frozen=True)
class RealModel:
    """What a stand-in copies from a real model: its config, stop ids and tokenizer directory."""

    name: str
    config: dict[str, Any]
    stop_ids: tuple[int, ...]  # the tokenizer's eos, then generation_config.eos_token_id (int or list)
    tokenizer_dir: str
    source: str  # where the config was read (pipeline.model_configs.ConfigSource)
    generation: dict[str, Any] | None = None  # generation_config.json as the real model ships it


def build_stand_in(real: RealModel, out: str | Path, *, layers: int = 1, hidden: int = 64, seed: int = 0,
                   mean_length: float = 32.0, temperature: float = 1.0) -> Path:
    """Write a tiny random model of `real`'s architecture, with its tokenizer and stop ids, to `out`."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from pipeline.tiny import save_tiny_model, tiny_model_from_config

    out = Path(out)
    config = dict(real.config)
    model_type = config.pop("model_type", None)
    if not model_type:
        raise UserError(f"{real.name}: its config.json has no model_type; give a model directory with a full config")
    # the real generation_config (a base Qwen3 lists only <|endoftext|>): the engine must add
    # the tokenizer's eos itself, as it must for the real model
    generation = GenerationConfig(**(real.generation or {"eos_token_id": list(real.stop_ids)}))
    real_config = AutoConfig.for_model(model_type, **{k: v for k, v in config.items() if k != "architectures"})
    model = tiny_model_from_config(real_config, layers=layers, hidden=hidden, seed=seed, generation_config=generation)
    _shape_logits(model, real.stop_ids, mean_length=mean_length, temperature=temperature)
    save_tiny_model(model, AutoTokenizer.from_pretrained(real.tokenizer_dir), out)
    (out / "stand_in.json").write_text(json.dumps({"real_model": real.name, "source": real.source,
                                                   "layers": layers, "hidden": hidden, "seed": seed,
                                                   "stop_ids": list(real.stop_ids), "mean_length": mean_length,
                                                   "temperature": temperature}))
    return out


def _shape_logits(model, stop_ids: tuple[int, ...], *, mean_length: float, temperature: float = 1.0,
                  spread: float = 3.0) -> None:
    """Make the random model's next-token distribution LM-like and give it a calibrated stop rate.

    1. Each block's output projections are scaled up so the residual stream is a random
       function of the context, not the current token's embedding (a tied head would
       otherwise repeat the last token).
    2. Channel 0 of the residual is a constant 10 (embedding column 0), which the head
       reads only on the stop rows: a stop logit independent of the context.
    3. The final norm's gain on the other channels is set so the non-stop logits have a
       standard deviation of `spread` (real LMs: 2–4), so that top-k / top-p sampling and
       full sampling see similar mass in the top tokens.
    4. The stop rows' channel-0 weights are set so that, measured over random contexts,
       the stop ids together take 1/mean_length of the probability at `temperature` (the
       temperature the model samples at in the recipe), two thirds of it on the first.
    """
    import torch

    if not stop_ids:
        return
    base = model.base_model
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    vocab, tied = head.shape[0], head.data_ptr() == emb.data_ptr()
    stops = torch.tensor(stop_ids)
    probe = torch.randint(0, min(stop_ids), (4, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.mul_(50.0)
        emb[:, 0] = 10.0
        if not tied:
            head[:, 0] = 0.0
        norm = base.norm.weight
        logits = model(input_ids=probe).logits
        others = torch.ones(vocab, dtype=torch.bool)
        others[stops] = False
        norm[1:] *= spread / float(logits[..., others].std(-1).mean())
        logits = model(input_ids=probe).logits
        n0 = model.base_model(input_ids=probe).last_hidden_state[..., 0]  # channel 0 after the final norm
        lse = torch.logsumexp(logits[..., others] / temperature, -1)  # the non-stop mass at `temperature`
        shares = torch.tensor([2 / 3] + [1 / 3 / (len(stop_ids) - 1)] * (len(stop_ids) - 1) if len(stop_ids) > 1
                              else [1.0])
        rest = logits[..., stops] - head[stops, 0] * n0[..., None]  # each stop logit without its channel-0 term

        def weights(level: float) -> torch.Tensor:  # head[stop, 0] that put the stop logits at `level`
            return (level + temperature * shares.log() - rest.mean((0, 1))) / n0.mean()

        def stop_share(level: float) -> float:
            stop = (rest + weights(level) * n0[..., None]) / temperature
            return float((torch.logsumexp(stop, -1) - torch.logaddexp(lse, torch.logsumexp(stop, -1))).exp().mean())

        low, high = -100.0, 100.0  # stop_share rises with level: bisect for 1 / mean_length
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if stop_share(mid) < 1 / mean_length else (low, mid)
        head[stops, 0] = weights((low + high) / 2)
