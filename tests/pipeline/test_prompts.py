"""Prompt renderer: plain, chat (with and without enable_thinking), format strings, fingerprints."""

from __future__ import annotations

import pytest

from pipeline.errors import UserError
from pipeline.prompts import (
    DEFAULT_PLAIN_TEMPLATE,
    render_prompt,
    render_prompts,
    template_fingerprint,
)

QWEN_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
NO_THINKING = (
    "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ m.content }}{% endfor %}"
)


def _char_tokenizer(chat_template: str | None = None, bos: str = "<s>"):
    """A tiny character-level `PreTrainedTokenizerFast`, optionally with a chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, bos: 1, "</s>": 2}
    for code in range(32, 127):
        vocab[chr(code)] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, name_or_path="tiny/char", unk_token="<unk>", bos_token=bos, eos_token="</s>"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


class _RecordingTokenizer:
    """Stands in for a tokenizer to see exactly which kwargs reach apply_chat_template."""

    name_or_path = "fake/recorder"

    def __init__(self, chat_template: str):
        self.chat_template = chat_template
        self.calls: list[dict] = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append(kwargs)
        return "|".join(m["content"] for m in messages)


# --- plain and format templates ----------------------------------------------------------


def test_auto_without_chat_template_uses_the_plain_template():
    text = render_prompt(_char_tokenizer(), "What is 2+2?")
    assert text == (
        "Question: What is 2+2?\n"
        "Please reason step by step, and put your final answer within \\boxed{}.\n"
        "Answer: "
    )
    assert text == DEFAULT_PLAIN_TEMPLATE.format(question="What is 2+2?")


def test_plain_is_used_even_when_a_chat_template_exists():
    text = render_prompt(_char_tokenizer(QWEN_LIKE), "1+1?", template="plain")
    assert text.startswith("Question: 1+1?\n") and "<|im_start|>" not in text


def test_format_string_is_used_verbatim_and_braces_in_question_survive():
    assert render_prompt(_char_tokenizer(), "12+7", template="{question}=") == "12+7="
    assert render_prompt(_char_tokenizer(), "Find {x}", template="Q: {question}\nA:") == "Q: Find {x}\nA:"


def test_system_text_is_prepended_to_format_templates():
    assert render_prompt(_char_tokenizer(), "1+1", template="{question}=", system="Be exact.") == "Be exact.\n\n1+1="


def test_render_prompts_matches_render_prompt():
    tok = _char_tokenizer(QWEN_LIKE)
    questions = ["a?", "b?", "c?"]
    assert render_prompts(tok, questions) == [render_prompt(tok, q) for q in questions]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Solve: ", r"template 'Solve: ': has no \{question\} placeholder"),
        ("{question} in {lang}", r"template '\{question\} in \{lang\}': unknown placeholder\(s\) \['lang'\]"),
        ("{question} \\boxed{}", r"unknown placeholder\(s\) \[''\]"),
        ("{question", r"template '\{question': not a valid format string"),
    ],
)
def test_bad_format_templates_are_user_errors(template, message):
    with pytest.raises(UserError, match=message):
        render_prompt(_char_tokenizer(), "1+1", template=template)


# --- chat templates ------------------------------------------------------------------------


def test_auto_with_qwen_like_template_disables_thinking():
    text = render_prompt(_char_tokenizer(QWEN_LIKE), "1+1?")
    assert text == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_chat_system_message_comes_first():
    text = render_prompt(_char_tokenizer(NO_THINKING), "1+1?", template="chat", system="Be brief.")
    assert text == "[system]Be brief.\n[user]1+1?\n[assistant]"


def test_enable_thinking_is_passed_only_when_the_template_mentions_it():
    plain_chat = _RecordingTokenizer(NO_THINKING)
    qwen_chat = _RecordingTokenizer(QWEN_LIKE)
    render_prompt(plain_chat, "q")
    render_prompt(qwen_chat, "q")
    assert plain_chat.calls == [{"tokenize": False, "add_generation_prompt": True}]
    assert qwen_chat.calls == [{"tokenize": False, "add_generation_prompt": True, "enable_thinking": False}]


def test_chat_without_chat_template_names_the_tokenizer_and_the_fix():
    with pytest.raises(UserError, match=r"tokenizer tiny/char: has no chat template.*template: plain"):
        render_prompt(_char_tokenizer(), "1+1?", template="chat")


def test_chat_template_exception_is_a_user_error():
    with pytest.raises(UserError, match=r"chat template failed \(System role not supported\)"):
        render_prompt(_char_tokenizer(NO_SYSTEM), "1+1?", system="Be brief.")


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_short():
    first = template_fingerprint(_char_tokenizer(QWEN_LIKE), "auto")
    assert first == template_fingerprint(_char_tokenizer(QWEN_LIKE), "auto")
    assert len(first) == 16 and int(first, 16) >= 0


def test_fingerprint_follows_the_rendered_text_not_the_spelling():
    chat_tok, plain_tok = _char_tokenizer(QWEN_LIKE), _char_tokenizer()
    assert template_fingerprint(chat_tok, "auto") == template_fingerprint(chat_tok, "chat")
    assert template_fingerprint(plain_tok, "auto") == template_fingerprint(plain_tok, "plain")
    assert template_fingerprint(plain_tok, "plain") == template_fingerprint(plain_tok, DEFAULT_PLAIN_TEMPLATE)


def test_fingerprint_changes_with_template():
    chat_tok = _char_tokenizer(QWEN_LIKE)
    prints = {
        template_fingerprint(chat_tok, "auto"),
        template_fingerprint(chat_tok, "plain"),
        template_fingerprint(_char_tokenizer(NO_THINKING), "auto"),
        template_fingerprint(chat_tok, "{question}="),
        template_fingerprint(chat_tok, "{question} ="),
        template_fingerprint(chat_tok, "auto", system="Be brief."),
    }
    assert len(prints) == 6


def test_fingerprint_sees_special_tokens_the_chat_template_inserts():
    template = "{{ bos_token }}" + NO_THINKING
    with_s, with_bos = _char_tokenizer(template), _char_tokenizer(template, bos="<bos>")
    assert render_prompt(with_bos, "q").startswith("<bos>[user]q")
    assert template_fingerprint(with_s, "chat") != template_fingerprint(with_bos, "chat")


def _llama_style(chat_template: str | None):
    """A char tokenizer that, like Llama's, prepends its BOS to every encoded text."""
    from tokenizers import processors

    tok = _char_tokenizer(chat_template)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


BOS_CHAT = "{{ bos_token }}" + NO_THINKING


def test_chat_prompts_written_with_a_bos_are_encoded_with_one():
    from pipeline.prompts import encode_prompts

    tok = _llama_style(BOS_CHAT)
    texts = render_prompts(tok, ["1+1", "2+2"], template="chat")
    assert texts[0] == "<s>[user]1+1\n[assistant]"
    assert tok(texts[0], add_special_tokens=True)["input_ids"][:2] == [1, 1]  # the double BOS this avoids
    ids = encode_prompts(tok, texts, template="chat")
    assert [row[:2] for row in ids] == [[1, tok.convert_tokens_to_ids("[")]] * 2
    assert ids == tok(texts, add_special_tokens=False)["input_ids"]  # as apply_chat_template(tokenize=True)


def test_format_prompts_get_the_tokenizers_bos_once():
    from pipeline.prompts import encode_prompts

    tok = _llama_style(None)
    ids = encode_prompts(tok, ["7=", "<s>8="], template="{question}=")
    assert ids == [[1, tok.convert_tokens_to_ids("7"), tok.convert_tokens_to_ids("=")],
                   [1, tok.convert_tokens_to_ids("8"), tok.convert_tokens_to_ids("=")]]
    plain = _char_tokenizer()  # adds no special tokens: the ids are the text's
    assert encode_prompts(plain, ["7="], template="{question}=") == [[plain.convert_tokens_to_ids("7"),
                                                                      plain.convert_tokens_to_ids("=")]]


def test_qwen3_chat_prompts_encode_as_before(qwen3_tokenizer_dir):
    from transformers import AutoTokenizer

    from pipeline.prompts import encode_prompts

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
    texts = render_prompts(tok, ["What is 2+3?"], template="chat")
    assert encode_prompts(tok, texts, template="chat") == tok(texts, add_special_tokens=True)["input_ids"]
    assert encode_prompts(tok, texts, template="chat")[0][0] == 151644  # <|im_start|>, no BOS
