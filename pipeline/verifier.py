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
scoring goes through `ScoringPool`: worker processes with a hard per-item deadline enforced by
the parent, which kills a worker that overruns and scores its item `wrong_reward`.

`VERIFIER_VERSION` names this grader and the Math-Verify version; it is stored in rollout-bank
manifests so rewards computed by a different grader can be detected.
"""

from __future__ import annotations

import importlib.metadata
import math
import multiprocessing
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

VERIFIER_NAME = "s2lpo-mathverify"
VERIFIER_VERSION = f"{VERIFIER_NAME}-1+math-verify-{importlib.metadata.version('math-verify')}"

# Seconds a freshly started worker may take to import SymPy/Math-Verify and say it is ready.
WORKER_STARTUP_TIMEOUT_S = 120.0

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


# ------------------------------------------------------------------------- process pool


def _worker_main(conn: Connection, timeout_s: int, correct_reward: float, wrong_reward: float) -> None:
    """Worker process loop: warm up, say ("ready",), then score chunks until told to stop.

    Receives lists of (index, response, gold); sends (index, Score) after every item, so the
    parent can reset this worker's deadline item by item. `None` or a closed pipe ends it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    score_response("\\boxed{\\frac{1}{2}}", "0.5\\pi", timeout_s=timeout_s)  # import SymPy now
    rewards = {"correct_reward": correct_reward, "wrong_reward": wrong_reward}
    try:
        conn.send(("ready",))
        while (chunk := conn.recv()) is not None:
            for index, response, gold in chunk:
                conn.send((index, score_response(response, gold, **rewards, timeout_s=timeout_s)))
    except (EOFError, OSError):
        return  # the parent is gone


@dataclass
class _Worker:
    """Parent-side handle of one worker process and the items it has in flight."""

    process: BaseProcess
    conn: Connection
    started_at: float
    ready: bool = False  # it sent ("ready",) after warming up
    dead: bool = False  # its pipe broke: the process exited or was killed
    pending: deque = field(default_factory=deque)  # (index, response, gold) sent, not yet scored
    deadline: float | None = None  # when the item at pending[0] must be done

    def stop(self, grace_s: float = 1.0) -> None:
        """Terminate (SIGTERM), then kill (SIGKILL) if still alive after `grace_s`."""
        for end in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                end()
                self.process.join(grace_s)
        self.conn.close()


class ScoringPool:
    """Batch scoring in worker processes with a hard per-item timeout.

    Workers are started with the "spawn" method (the parent may hold torch/CUDA threads that
    fork would copy in a broken state) and live until `close()`. The parent hands chunks of
    items to idle workers and waits on all pipes until the earliest per-worker deadline; each
    item result moves that worker's deadline to now + timeout_s. A worker past its deadline,
    or one that died, is terminated; its current item is scored
    `Score(wrong_reward, correct=False, extracted, timed_out=True)` and counted in `timeouts`;
    the rest of its chunk is re-queued, and a fresh worker takes its place (about a second
    to import SymPy; its first deadline starts only once it reports ready).

    Inside a worker Math-Verify keeps its own SIGALRM timeout of max(1, ceil(timeout_s / 3))
    whole seconds, so ordinary slow answers end gracefully before the hard deadline.

    Args:
        num_workers: worker processes; 0 scores in the calling process (no hard timeout).
        timeout_s: hard wall-clock limit per item, in seconds.
        correct_reward: reward for an equivalent answer.
        wrong_reward: reward for a wrong, missing or timed-out answer.

    Attributes:
        timeouts: cumulative number of items that hit the hard deadline or crashed a worker.
    """

    def __init__(
        self, num_workers: int = 2, *, timeout_s: float = 10.0, correct_reward: float = 1.0, wrong_reward: float = 0.0
    ) -> None:
        if num_workers < 0 or timeout_s <= 0:
            raise ValueError(f"ScoringPool needs num_workers >= 0 and timeout_s > 0, got {num_workers}, {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.correct_reward = correct_reward
        self.wrong_reward = wrong_reward
        self.timeouts = 0
        self._inner_timeout_s = max(1, math.ceil(self.timeout_s / 3))
        self._context = multiprocessing.get_context("spawn")
        self._closed = False
        self._workers: list[_Worker] = []
        self._workers.extend(self._start_worker() for _ in range(num_workers))

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        args = (child_conn, self._inner_timeout_s, self.correct_reward, self.wrong_reward)
        process = self._context.Process(target=_worker_main, args=args, daemon=True)
        process.start()
        child_conn.close()  # keep only the child's copy, so its death reads as EOF here
        return _Worker(process=process, conn=parent_conn, started_at=time.monotonic())

    def score(self, responses: Sequence[str], golds: Sequence[str]) -> list[Score]:
        """Score responses[i] against golds[i] for every i; results in input order.

        Chunks hold ceil(N / (4 * num_workers)) items (at most 64), so every worker gets
        several chunks and a slow chunk does not leave the others idle. If scoring is
        interrupted (e.g. KeyboardInterrupt) the pool is closed.
        """
        if len(responses) != len(golds):
            raise ValueError(f"got {len(responses)} responses but {len(golds)} golds; pass one gold per response")
        if self._closed:
            raise RuntimeError("ScoringPool.score called after close(); create a new pool")
        rewards = {"correct_reward": self.correct_reward, "wrong_reward": self.wrong_reward}
        if not self._workers:
            return [score_response(r, g, **rewards, timeout_s=self._inner_timeout_s) for r, g in zip(responses, golds)]
        items = list(zip(range(len(responses)), responses, golds))
        size = max(1, min(64, math.ceil(len(items) / (4 * len(self._workers)))))
        queue = deque(items[i : i + size] for i in range(0, len(items), size))
        results: list[Score | None] = [None] * len(items)
        remaining = len(items)
        try:
            while remaining:
                self._dispatch(queue)
                remaining -= self._collect(results, queue)
        except BaseException:
            self.close()  # workers may hold half-sent chunks; never reuse them
            raise
        return results  # type: ignore[return-value]  # all slots filled once remaining == 0

    def _dispatch(self, queue: deque) -> None:
        """Give the next queued chunk to every ready, idle worker."""
        for slot, worker in enumerate(self._workers):
            if not (queue and worker.ready and not worker.pending):
                continue
            try:
                if not worker.process.is_alive():
                    raise BrokenPipeError
                worker.conn.send(queue[0])
            except OSError:  # died while idle (e.g. OOM-killed): restart it, nothing is lost
                worker.stop()
                self._workers[slot] = self._start_worker()
                continue
            worker.pending.extend(queue.popleft())
            worker.deadline = time.monotonic() + self.timeout_s

    def _collect(self, results: list, queue: deque) -> int:
        """Wait for messages until the earliest deadline; return how many items finished."""
        busy = [w for w in self._workers if w.pending or not w.ready]
        deadlines = [w.deadline if w.ready else w.started_at + WORKER_STARTUP_TIMEOUT_S for w in busy]
        readable = wait([w.conn for w in busy], max(0.0, min(deadlines) - time.monotonic()))
        finished = sum(self._receive(w, results) for w in busy if w.conn in readable)
        now = time.monotonic()
        for slot, worker in enumerate(self._workers):
            if not worker.ready and (worker.dead or now > worker.started_at + WORKER_STARTUP_TIMEOUT_S):
                worker.stop()
                raise RuntimeError(
                    f"verifier worker failed to start within {WORKER_STARTUP_TIMEOUT_S:.0f}s (exit code "
                    f"{worker.process.exitcode}); run `python -c 'import pipeline.verifier'` to see why"
                )
            if worker.dead or (worker.pending and worker.deadline is not None and now >= worker.deadline):
                finished += self._replace(slot, results, queue)
        return finished

    def _receive(self, worker: _Worker, results: list) -> int:
        """Drain one worker's pipe; return how many items finished. Marks a dead worker."""
        finished = 0
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == ("ready",):
                    worker.ready = True
                    continue
                index, score = message
                expected, _, _ = worker.pending.popleft()
                if index != expected:
                    raise RuntimeError(f"verifier worker answered item {index}, expected {expected}")
                results[index] = score
                finished += 1
                worker.deadline = time.monotonic() + self.timeout_s if worker.pending else None
        except (EOFError, OSError):
            worker.dead = True
        return finished

    def _replace(self, slot: int, results: list, queue: deque) -> int:
        """Stop a stuck or dead worker, fail its current item, re-queue the rest, restart it."""
        worker = self._workers[slot]
        worker.stop()
        self._workers[slot] = self._start_worker()
        if not worker.pending:
            return 0
        index, response, _ = worker.pending.popleft()
        extracted = extract_answer(response)
        results[index] = Score(reward=self.wrong_reward, correct=False, extracted=extracted, timed_out=True)
        self.timeouts += 1
        if worker.pending:
            queue.appendleft(list(worker.pending))
        return 1

    def close(self) -> None:
        """Ask the workers to exit, stop any that do not; safe to call more than once."""
        workers, self._workers, self._closed = getattr(self, "_workers", []), [], True
        for worker in workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass  # already dead
        for worker in workers:
            worker.process.join(timeout=2.0)
            worker.stop()

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a finaliser must never raise (e.g. at interpreter exit)
            pass
