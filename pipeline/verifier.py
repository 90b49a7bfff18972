"""The reward function: extract a final answer from a response and check it against the gold.

    reward(response, gold) = correct_reward  if is_equivalent(extract_answer(response), gold)
                             wrong_reward    otherwise (no answer found, not equivalent, timed out)

Extraction (`extract_answer`) takes, in order of preference: the content of the LAST
`\\boxed{...}` / `\\fbox{...}` (brace balanced, escaped `\\{ \\}` ignored), else the rest of
the last "Answer:" line, else the last number in the text. It runs in linear time.

Equivalence (`is_equivalent`) has a fast path and a symbolic path:
  1. both strings normalise to the same text (spaces, `$`, `\\left`/`\\right`, `\\!`, `\\,`,
     `\\dfrac`, trailing `.` removed)                                  -> equivalent;
  2. both are plain decimal numbers (thousands commas `1,000` allowed) -> exact Decimal
     comparison: `0204 == 204`, `204.0 == 204`, but `159 != 159.0001` (no float tolerance);
  3. otherwise Math-Verify (HuggingFace): both sides are wrapped as `$...$`, parsed to SymPy
     and compared (floats rounded to 6 decimal places, symbolic simplification, sets,
     intervals, tuples, relations), each step under Math-Verify's SIGALRM timeout.

Math-Verify's timeout only works in the main thread and can overrun inside C code, so batch
scoring goes through `pipeline.scoring_pool.ScoringPool`: worker processes with a hard
per-item deadline enforced by the parent, which kills a worker that overruns.

`VERIFIER_VERSION` names this grader and the Math-Verify version; it is stored in rollout-bank
manifests so rewards computed by a different grader can be detected.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

VERIFIER_NAME = "s2lpo-mathverify"
VERIFIER_VERSION = f"{VERIFIER_NAME}-1+math-verify-{importlib.metadata.version('math-verify')}"


_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)  # `\{`, `\}`, `\\` are one token, not a brace
_ANSWER_LINE = re.compile(r"\banswer\b[ \t*_]*:[ \t*_]*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w)])-?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_DOLLAR = re.compile(r"\\?\$")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_SPACING = re.compile(r"\\[!,;: ]|\s+")
_FRAC_VARIANT = re.compile(r"\\[dt]frac(?![A-Za-z])")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


@dataclass(frozen=True)
class Score:
    """The verdict on one response.

    Attributes:
        reward: correct_reward if correct else wrong_reward.
        correct: whether the extracted answer is equivalent to the gold answer.
        extracted: the extracted answer string, or None when nothing could be extracted.
        timed_out: the check ran out of time (Math-Verify's own timeout, the pool's hard
            deadline, or a crashed worker); such a response is scored wrong.
    """

    reward: float
    correct: bool
    extracted: str | None
    timed_out: bool


Scorer = Callable[[Sequence[str], Sequence[str]], list[Score]]
"""What scores a batch: (responses, golds) → one `Score` each, in order (`ScoringPool.score`)."""


# --------------------------------------------------------------------------- extraction


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every balanced `{` to the index of its `}` in one linear pass."""
    matches: dict[int, int] = {}
    stack: list[int] = []
    for token in _BRACE_TOKEN.finditer(text):
        char = token.group()
        if char == "{":
            stack.append(token.start())
        elif char == "}" and stack:
            matches[stack.pop()] = token.start()
    return matches


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` whose brace closes, else None."""
    openings = [m.end() - 1 for m in _BOX_OPEN.finditer(text)]
    if not openings:
        return None
    matches = _matching_braces(text)
    for brace in reversed(openings):
        if brace in matches:
            return text[brace + 1 : matches[brace]].strip()
    return None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last non-overlapping match of `pattern` in `text` (one left-to-right scan)."""
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def _strip_delimiters(answer: str) -> str:
    """Remove math delimiters and trailing punctuation: `$42$.` -> `42`, `\\(x\\)` -> `x`."""
    answer = answer.strip().strip("*_ \t").rstrip(".").strip()
    if answer.startswith(("\\(", "\\[")) and answer.endswith(("\\)", "\\]")):
        answer = answer[2:-2]
    return _UNESCAPED_DOLLAR.sub("", answer).strip()


def extract_answer(text: str) -> str | None:
    """The final answer stated in a response, or None.

    Preference order: (1) content of the last `\\boxed{...}`, `\\boxed {...}` or `\\fbox{...}`
    with balanced (nested) braces; (2) the rest of the last line containing "Answer:"
    (case-insensitive, markdown `**Answer:**` allowed), with `$...$`, `\\(...\\)` and a
    trailing `.` stripped; (3) the last number in the text: integers, decimals, a leading
    minus, and thousands separators (`1,000` is returned as "1000"). All stages are regex
    scans without nested quantifiers plus one linear brace pass, so megabyte inputs are fine.
    """
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    answer_line = _last_match(_ANSWER_LINE, text)
    stated = _strip_delimiters(answer_line.group(1)) if answer_line else ""
    if stated:
        return stated
    number = _last_match(_NUMBER, text)
    return number.group().replace(",", "") if number else None


# -------------------------------------------------------------------------- equivalence


def normalize_answer(answer: str) -> str:
    """Canonical text for the fast string comparison (not for parsing: spaces are dropped).

    Removes `$` and `\\$`, `\\left`/`\\right`, thin spaces `\\! \\, \\; \\:`, all whitespace and
    trailing dots; maps `\\dfrac`/`\\tfrac` to `\\frac` and `{,}` to `,`.
    """
    answer = _DOLLAR.sub("", answer)
    answer = _LEFT_RIGHT.sub("", answer)
    answer = _SPACING.sub("", answer)
    answer = _FRAC_VARIANT.sub(r"\\frac", answer).replace("{,}", ",")
    return answer.rstrip(".")


def _as_decimal(normalized: str) -> Decimal | None:
    """The value of a plain decimal number such as `-12`, `0.5`, `1,000`; None otherwise."""
    if _THOUSANDS_NUMBER.fullmatch(normalized):
        normalized = normalized.replace(",", "")
    return Decimal(normalized) if _PLAIN_NUMBER.fullmatch(normalized) else None


def _signal_timeout(timeout_s: float | None) -> int | None:
    """Math-Verify's timeout argument: whole seconds for SIGALRM, None off the main thread."""
    if timeout_s is None or timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout_s))


def _math_verify(pred: str, gold: str, timeout_s: float | None) -> tuple[bool, bool]:
    """(equivalent, timed_out) from Math-Verify; both sides parsed from `$...$`."""
    from math_verify import parse, verify  # heavy (SymPy); imported on first use only
    from math_verify.errors import TimeoutException

    seconds = _signal_timeout(timeout_s)
    try:
        gold_parsed = parse(f"${_UNESCAPED_DOLLAR.sub('', gold)}$", parsing_timeout=seconds, raise_on_error=True)
        pred_parsed = parse(f"${_UNESCAPED_DOLLAR.sub('', pred)}$", parsing_timeout=seconds, raise_on_error=True)
    except TimeoutException:
        return False, True
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not equivalent
        return False, False
    timed_out = False
    for gold_item in gold_parsed:
        for pred_item in pred_parsed:
            try:
                if verify(gold_item, pred_item, timeout_seconds=seconds, raise_on_error=True):
                    return True, False
            except TimeoutException:
                timed_out = True
            except Exception:  # noqa: BLE001 - SymPy errors on exotic input mean "no match"
                continue
    return False, timed_out


def _compare(pred: str, gold: str, timeout_s: float | None) -> tuple[bool, bool]:
    """(equivalent, timed_out): the fast paths, then Math-Verify."""
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if pred_norm == gold_norm and gold_norm:
        return True, False
    pred_value, gold_value = _as_decimal(pred_norm), _as_decimal(gold_norm)
    if pred_value is not None and gold_value is not None:
        return pred_value == gold_value, False
    return _math_verify(pred, gold, timeout_s)


def is_equivalent(pred: str, gold: str, *, timeout_s: int = 5) -> bool:
    """Whether the predicted answer equals the gold answer mathematically.

    Args:
        pred: the extracted answer (no `\\boxed`), LaTeX or plain text.
        gold: the reference answer from the dataset.
        timeout_s: Math-Verify's per-step timeout in whole seconds (parse gold, parse pred,
            each comparison). Off the main thread no timeout is possible and none is used.

    Returns:
        True when the fast string/decimal path or Math-Verify says equal; False otherwise,
        including on timeout.
    """
    return _compare(pred, gold, timeout_s)[0]


def score_response(
    response: str, gold: str, *, correct_reward: float = 1.0, wrong_reward: float = 0.0, timeout_s: int = 5
) -> Score:
    """Extract the answer from `response` and score it against `gold`.

    Args:
        response: the full model output.
        gold: the reference answer.
        correct_reward: reward for an equivalent answer (default 1).
        wrong_reward: reward for a wrong, missing or timed-out answer (default 0).
        timeout_s: Math-Verify's timeout per step, see `is_equivalent`.
    """
    extracted = extract_answer(response)
    if extracted is None:
        return Score(reward=wrong_reward, correct=False, extracted=None, timed_out=False)
    correct, timed_out = _compare(extracted, gold, timeout_s)
    reward = correct_reward if correct else wrong_reward
    return Score(reward=reward, correct=correct, extracted=extracted, timed_out=timed_out and not correct)
