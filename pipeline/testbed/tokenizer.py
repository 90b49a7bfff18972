"""A character-level tokenizer in Hugging Face format, shared by the testbed family.

Saved with `save_pretrained` as a `PreTrainedTokenizerFast` (tokenizer.json), so
transformers and vLLM load it like any hub tokenizer. Every printable ASCII
character and newline is one token; `<s>` is prepended to every encoded text and
`</s>` ends a response. It has no chat template: prompts use the plain template.
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
CHARACTERS = "\n" + "".join(chr(i) for i in range(32, 127))
VOCAB_SIZE = 128  # model embedding rows; ids ≥ len(vocab) are never produced


def build_char_tokenizer():
    """A `PreTrainedTokenizerFast` with one id per character (ids 0..3 are special)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    assert len(vocab) <= VOCAB_SIZE and set(string.digits) <= set(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
