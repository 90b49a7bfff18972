"""Stop tokens and the response text: one rule for every engine.

**The stop set** is the union of
- the model's `generation_config.eos_token_id` (an int or a list: Qwen3's base models list
  151643 `<|endoftext|>`, the post-trained ones [151645, 151643]),
- the tokenizer's `eos_token_id` (Qwen3's is `<|im_end|>` 151645, only one of them), and
- the user's `stop_token_ids` (the `stop_token_ids` key of explore, train and evaluate),

sorted. A response ends at the first token of the set it samples (`finish_reason` "stop");
one that reaches `max_new_tokens` first ends "length". A bank records its stop set in
bank.json (`sampling.stop_token_ids`).

**What a response holds.** `token_ids` keep the stop token that ended the response (the
learner is trained to stop, so that token's log-prob is part of the loss). `text` — what
the bank stores as `response` and the verifier sees — is the decode of the tokens *before*
the stop token, with any other special token kept as its text (`<|im_start|>`,
`<|image_pad|>`, …): dropping them would join the text around them, and "1<|im_start|>2"
must not read as the number 12. A response that is only a stop token has empty text (and
earns the verifier's wrong reward: nothing to extract). An id past the tokenizer's
vocabulary reads as `<|unused|>` (see `response_text`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.errors import UserError


def as_id_list(value) -> list[int]:
    """`generation_config.eos_token_id` and friends: None, an int or a list of ints → list."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def stop_set(*sources: Iterable[int] | int | None) -> tuple[int, ...]:
    """The sorted union of every id in `sources` (each None, an id or a list of ids)."""
    return tuple(sorted({i for s in sources for i in as_id_list(s)}))


def generation_eos_ids(name: str, *, revision: str | None = None, trust_remote_code: bool = False) -> list[int]:
    """`eos_token_id` of `name`'s generation_config.json, or of its config.json when it ships
    none (what `transformers` falls back to); [] when neither names one. Reads no weights."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return as_id_list(GenerationConfig.from_pretrained(name, revision=revision).eos_token_id)
    except OSError:
        pass
    try:
        config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"{name}: cannot read the model's config.json for its stop tokens ({exc}); "
                        "give a model directory or a hub id available offline") from None
    text_config = getattr(config, "get_text_config", lambda: config)()
    return as_id_list(getattr(text_config, "eos_token_id", None))


def model_stop_ids(name: str, tokenizer, extra: Sequence[int] = (), *, revision: str | None = None,
                   trust_remote_code: bool = False) -> tuple[int, ...]:
    """The stop set of model `name` served with `tokenizer`, plus the user's `extra` ids."""
    ids = stop_set(generation_eos_ids(name, revision=revision, trust_remote_code=trust_remote_code),
                   tokenizer.eos_token_id, list(extra))
    check_stop_ids(ids, tokenizer, where=name)
    return ids


def check_stop_ids(ids: Sequence[int], tokenizer, *, where: str) -> None:
    """An empty stop set (nothing would ever stop) or an id outside the vocabulary is a user error."""
    if not ids:
        raise UserError(f"{where}: neither generation_config.json, config.json nor the tokenizer names an "
                        "end-of-sequence token; set stop_token_ids to the ids that end a response")
    size = len(tokenizer)
    bad = [i for i in ids if not 0 <= i < size]
    if bad:
        raise UserError(f"stop_token_ids: {bad[0]} is not a token id of {where}'s tokenizer "
                        f"(0..{size - 1}); fix stop_token_ids")


def cut_at_stop(ids: Sequence[int], stops: Sequence[int]) -> tuple[tuple[int, ...], bool]:
    """(`ids` up to and including the first stop token, whether one was found)."""
    stop = set(stops)
    for k, tok in enumerate(ids):
        if tok in stop:
            return tuple(ids[: k + 1]), True
    return tuple(ids), False


UNUSED_ID_TEXT = "<|unused|>"  # text of an id past the tokenizer (no digits: the verifier reads numbers)


def response_text(tokenizer, ids: Sequence[int], *, stopped: bool) -> str:
    """The text the bank stores and the verifier reads: `ids` without the final stop token
    (when `stopped`), other special tokens kept as their text.

    An id the embedding has but the tokenizer lacks (Qwen3 pads 151,669 tokens to 151,936
    rows; only a random or broken model samples them) decodes to nothing in `tokenizers`,
    which would join its neighbours; it reads as `UNUSED_ID_TEXT` instead."""
    body = list(ids[:-1] if stopped else ids)
    size = len(tokenizer)
    if all(i < size for i in body):
        return tokenizer.decode(body, skip_special_tokens=False) if body else ""
    pieces, run = [], []
    for i in body + [size]:  # a sentinel flushes the last run
        if i < size:
            run.append(i)
            continue
        pieces.append(tokenizer.decode(run, skip_special_tokens=False) if run else "")
        run = []
    return UNUSED_ID_TEXT.join(pieces)  # k ids past the vocabulary split the body into k + 1 pieces
