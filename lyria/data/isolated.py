"""Runs an untrusted parser over many inputs in worker processes with a per-item time limit.

A worker that hangs past the limit is killed and one that dies (segfault, os._exit, out of memory)
is replaced; either way the item becomes a recorded failure and the run goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm


@dataclass
class Outcome:
    """What happened to item `index`: `value` when ok, else `reason` (one line, names the failure)."""

    index: int
    ok: bool
    value: Any = None
    reason: str = ""
    error: str = ""  # the exception's type name; "timeout" or "died" when the worker was lost


def _worker(conn, fn: Callable) -> None:
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, item = task
        try:
            conn.send((index, True, fn(item), "", ""))
        except Exception as err:  # any parser error is the item's failure, not the worker's
            conn.send((index, False, None, describe_error(err), type(err).__name__))


def describe_error(err: BaseException) -> str:
    """One line: the error's type, the first line of its message and where it was raised. An error that is a
    plain refusal (it sets `refusal = True`, e.g. a piece over a limit) gives only its message."""
    message = str(err).splitlines()[0] if str(err) else ""
    if getattr(err, "refusal", False):
        return message
    last = traceback.extract_tb(err.__traceback__)[-1:]
    where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
    return f"{type(err).__name__}: {message}{where}"


class _Slot:
    def __init__(self, ctx, fn: Callable) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, fn), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def assign(self, index: int, item: Any) -> None:
        self.task, self.started = index, time.monotonic()
        self.conn.send((index, item))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def isolated_map(
    fn: Callable,
    items: Sequence[Any],
    num_proc: int = 1,
    timeout_s: float = 60.0,
    desc: str = "parsing",
    start_method: str = "fork",
) -> Iterator[Outcome]:
    """Yields one Outcome per item (in completion order). `fn` must be a module-level function."""
    if not items:
        return
    ctx = mp.get_context(start_method)
    pending = list(enumerate(items))[::-1]
    slots = [_Slot(ctx, fn) for _ in range(max(1, min(num_proc, len(items))))]
    progress = tqdm(total=len(items), desc=desc, unit="piece", leave=False, mininterval=1.0)
    try:
        for slot in slots:
            if pending:
                slot.assign(*pending.pop())
        while any(slot.task is not None for slot in slots):
            busy = [s for s in slots if s.task is not None]
            now = time.monotonic()
            wait_for = max(0.05, min(timeout_s - (now - s.started) for s in busy))
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=wait_for)
            for i, slot in enumerate(slots):
                if slot.task is None:
                    continue
                outcome = None
                if slot.conn in ready:
                    try:
                        outcome = Outcome(*slot.conn.recv())
                    except (EOFError, OSError):
                        pass
                if outcome is None and not slot.process.is_alive():
                    code = slot.process.exitcode
                    outcome = Outcome(slot.task, False, reason=f"worker process died (exit code {code})", error="died")
                    slot.stop(kill=True)
                    slots[i] = slot = _Slot(ctx, fn)
                elif outcome is None and time.monotonic() - slot.started > timeout_s:
                    outcome = Outcome(slot.task, False, reason=f"timed out after {timeout_s:g} s", error="timeout")
                    slot.stop(kill=True)
                    slots[i] = slot = _Slot(ctx, fn)
                if outcome is None:
                    continue
                slot.task = None
                progress.update(1)
                yield outcome
                if pending:
                    slot.assign(*pending.pop())
    finally:
        progress.close()
        for slot in slots:
            slot.stop(kill=slot.task is not None)
