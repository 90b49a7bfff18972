"""One prompt renderer shared by the explorer, the learner and evaluation.

The explorer's bank stores prompt token ids, and the learner later scores bank
responses against its own prompts, so both must render a question to exactly the
same text. Everything goes through `render_prompt`; `template_fingerprint` hashes
what it produces so a bank built with another template can be refused. Rendered
prompts become token ids one way only, `encode_prompts`: chat-template text is
encoded without adding special tokens (the template wrote them: a Llama-style
`{{ bos_token }}` would otherwise come out twice), format-template text with the
tokenizer's own (its BOS, if it adds one) unless the text already begins with it.

Templates (the `template` argument):
- `"auto"`  — the tokenizer's chat template when it has one, else `DEFAULT_PLAIN_TEMPLATE`;
- `"chat"`  — the tokenizer's chat template, required;
- `"plain"` — `DEFAULT_PLAIN_TEMPLATE`;
- any other string containing `{question}` — a `str.format` template used verbatim
  (literal braces doubled, e.g. `\\boxed{{}}`); the CPU testbed uses `"{question}="`.

Chat templates are applied with one user message (after an optional system message)
and `add_generation_prompt=True`; `enable_thinking=False` is passed only when the
template text mentions `enable_thinking` (Qwen3), so other templates never see it.
For format templates a `system` text is prepended, followed by a blank line.

A problem's own system text (`Problem.system`: a verl chat list's system message) is
rendered by `render_problems`: as the system turn of a chat template (Qwen3:
`<|im_start|>system\n…<|im_end|>\n<|im_start|>user\n…`), or, for `plain` and format
templates, as that preamble: `system + "\n\n" + template.format(question=…)`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

DEFAULT_PLAIN_TEMPLATE = (
    "Question: {question}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}.\n"
    "Answer: "
)
"""Plain (base-model) prompt: the question, the usual boxed-answer instruction, `Answer: `."""

_PROBE_QUESTION = "What is 1 + 1?"


class TemplateKind(enum.Enum):
    """How a prompt is rendered: the tokenizer's chat template or a format string."""

    CHAT = "chat"
    FORMAT = "format"


@dataclass(frozen=True)
class ResolvedTemplate:
    """A `template` argument resolved against one tokenizer.

    `text` is the chat template source (CHAT) or the format string (FORMAT);
    `thinking_flag` says whether `enable_thinking=False` is passed to the chat template.
    """

    kind: TemplateKind
    text: str
    thinking_flag: bool = False


def resolve_template(tokenizer: Any, template: str) -> ResolvedTemplate:
    """Decide what `render_prompt` will do for this tokenizer and `template` argument.

    Raises:
        UserError: `chat` without a chat template, or a format string that lacks
            `{question}` or has other placeholders.
    """
    chat_text = _chat_template_text(tokenizer)
    if template == "auto":
        template = "chat" if chat_text else "plain"
    if template == "chat":
        if not chat_text:
            raise UserError(
                f"tokenizer {_tokenizer_name(tokenizer)}: has no chat template; "
                "set template: plain (or a format string with {question})"
            )
        return ResolvedTemplate(TemplateKind.CHAT, chat_text, "enable_thinking" in chat_text)
    if template == "plain":
        return ResolvedTemplate(TemplateKind.FORMAT, DEFAULT_PLAIN_TEMPLATE)
    _check_format_template(template)
    return ResolvedTemplate(TemplateKind.FORMAT, template)


def render_prompt(tokenizer: Any, question: str, *, template: str = "auto", system: str | None = None) -> str:
    """Render one question as prompt text (not token ids).

    Args:
        tokenizer: a Hugging Face tokenizer; only `chat_template`,
            `apply_chat_template` and `name_or_path` are used.
        question: the problem text.
        template: `auto`, `chat`, `plain` or a format string with `{question}`
            (see the module docstring).
        system: optional system message (chat) or preamble (format templates).
    """
    return _render(tokenizer, resolve_template(tokenizer, template), question, system)


def render_prompts(
    tokenizer: Any, questions: Iterable[str], *, template: str = "auto", system: str | None = None
) -> list[str]:
    """`render_prompt` for many questions (the template is resolved once)."""
    resolved = resolve_template(tokenizer, template)
    return [_render(tokenizer, resolved, question, system) for question in questions]


def render_problems(tokenizer: Any, problems: Iterable[Any], *, template: str = "auto") -> list[str]:
    """Render `pipeline.data.Problem`s, each with its own system text (`problem.system`).

    This is what the explorer, the learner and evaluation render, so a verl row's system
    message reaches the prompt the same way in every stage.
    """
    resolved = resolve_template(tokenizer, template)
    return [_render(tokenizer, resolved, p.question, p.system) for p in problems]


def encode_prompts(tokenizer: Any, texts: Sequence[str], *, template: str = "auto") -> list[list[int]]:
    """Token ids of prompts that `render_prompts(..., template=template)` rendered: the one
    way explore, train and evaluate tokenise prompts (module docstring: which special
    tokens are added). Encodes in at most two batched tokenizer calls, order kept."""
    add = resolve_template(tokenizer, template).kind is TemplateKind.FORMAT
    bos = getattr(tokenizer, "bos_token", None) if add else None
    adds = [add and not (bos and text.startswith(bos)) for text in texts]
    out: list[list[int]] = [[] for _ in texts]
    for flag in (True, False):
        picked = [i for i, a in enumerate(adds) if a is flag]
        if picked:
            ids = tokenizer([texts[i] for i in picked], add_special_tokens=flag)["input_ids"]
            for i, row in zip(picked, ids):
                out[i] = list(row)
    return out


def template_fingerprint(tokenizer: Any, template: str, *, system: str | None = None) -> str:
    """16-hex hash of exactly what prompt text `render_prompt` produces.

    Covers the resolved kind, the template text (the chat template source when a
    chat template is used), the thinking flag, the system text, and a probe
    rendering (which captures special tokens the chat template inserts).
    """
    resolved = resolve_template(tokenizer, template)
    payload = {
        "kind": resolved.kind.value,
        "text": resolved.text,
        "thinking_flag": resolved.thinking_flag,
        "system": system,
        "probe": _render(tokenizer, resolved, _PROBE_QUESTION, system),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _render(tokenizer: Any, resolved: ResolvedTemplate, question: str, system: str | None) -> str:
    """Render with an already-resolved template."""
    if resolved.kind is TemplateKind.FORMAT:
        body = resolved.text.format(question=question)
        return f"{system}\n\n{body}" if system else body
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    extra = {"enable_thinking": False} if resolved.thinking_flag else {}
    from jinja2.exceptions import TemplateError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    except TemplateError as exc:
        raise UserError(
            f"tokenizer {_tokenizer_name(tokenizer)}: chat template failed ({exc}); "
            "drop the system prompt or set template: plain"
        ) from None
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _chat_template_text(tokenizer: Any) -> str:
    """The tokenizer's chat template source ('' when it has none); dicts are serialised."""
    chat = getattr(tokenizer, "chat_template", None)
    if not chat:
        return ""
    if isinstance(chat, dict):
        return json.dumps(chat, sort_keys=True)
    return str(chat)


def _check_format_template(template: str) -> None:
    """A format template must use `{question}` and no other placeholder."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UserError(
            f"template {template!r}: not a valid format string ({exc}); double literal braces as {{{{ }}}}"
        ) from None
    if "question" not in names:
        raise UserError(
            f"template {template!r}: has no {{question}} placeholder; use auto, chat, plain "
            "or a format string such as '{question}='"
        )
    extra = sorted(names - {"question"})
    if extra:
        raise UserError(
            f"template {template!r}: unknown placeholder(s) {extra}; only {{question}} is "
            "filled, double literal braces as {{{{ }}}}"
        )


def _tokenizer_name(tokenizer: Any) -> str:
    """The tokenizer's path/hub id for messages, else its class name."""
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
