"""Batch scoring in worker processes with a hard per-item timeout.

A pathological expression must not hang a training or exploration job: Math-Verify's
own timeout uses SIGALRM, works only in a main thread and can overrun inside C code,
so `ScoringPool` runs `pipeline.verifier.score_response` in spawned worker processes
and kills any worker that passes its per-item deadline (reward `wrong_reward`, counted).
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from pipeline.verifier import Score, extract_answer, score_response

# Seconds a freshly started worker may take to import SymPy/Math-Verify and say it is ready.
WORKER_STARTUP_TIMEOUT_S = 120.0


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
