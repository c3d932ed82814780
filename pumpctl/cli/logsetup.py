"""The processes' logging, off their event loops (issue 18: nothing slow on a stop's path).

A log line written where it is made is a write to stderr, and stderr is a pipe to the journal
(systemd) or a terminal: when its reader is slow or stopped, the pipe fills and the write
blocks, and with it the kernel's event loop, the loop every stop, status read and watchdog feed
passes through. So a call to `logging` only puts the record on a bounded queue
(`LOG_QUEUE_LINES`), never waiting; one thread of its own writes the lines out. When the queue
is full the line is dropped and counted, and the next line that gets through is preceded by a
warning saying how many were dropped: the log says it has a gap rather than the stop waiting
for the log. Lines still queued are written when the process exits normally (atexit); a process
that is killed loses them, as it would lose a buffered line.

A traceback is written with its frames and each exception's type, never the exception's
message (`Withheld`): an error no route expected may quote the request that caused it (a
database driver's error quotes the statement's parameters, a patient's MRN among them; issue
20). An `OSError` keeps its errno and the system's words, which name no input.

`log_format = "json"` writes each line as one JSON object (`json_lines()`, python-json-logger,
a kept library): `at`, `level`, `logger`, `message`, the message and its traceback escaped
however many quotes and lines they hold, so a collector reads every line whole.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sys
import time
import traceback
from logging.handlers import QueueHandler, QueueListener
from types import TracebackType
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_QUEUE_LINES", "Withheld", "flush", "json_lines", "log_off_the_loop"]

#: Log records waiting for the writing thread at most; more are dropped and counted.
LOG_QUEUE_LINES = 10_000
#: Seconds an exiting process waits for its queued lines to be written (a log reader that does
#: not read must not keep a stopped service from exiting).
LOG_EXIT_WAIT_S = 2.0


class _BoundedQueueHandler(QueueHandler):
    """Puts records on a bounded queue without waiting; counts what a full queue drops."""

    def __init__(self, lines: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(lines)
        self.dropped = 0  # changed only under the handler's lock (`Handler.handle` holds it)

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped:
            gap = logging.LogRecord(
                "pumpctl.log",
                logging.WARNING,
                __file__,
                0,
                "%d log lines dropped: the log's reader did not keep up (issue 18)",
                (self.dropped,),
                None,
            )
            try:
                self.queue.put_nowait(self.prepare(gap))
            except queue.Full:
                self.dropped += 1
                return
            self.dropped = 0
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class Withheld(logging.Formatter):
    """A formatter whose tracebacks show frames and exception types, not messages."""

    def formatException(  # noqa: N802 - logging's name
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        error = ei[1]
        if error is None:
            return ""
        return "".join(_withheld(error, set())).rstrip("\n")


def _said(error: BaseException) -> str:
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if isinstance(error, OSError) and error.strerror:
        return f"{name}: [Errno {error.errno}] {error.strerror}"
    return f"{name}: (message withheld: it may quote request input)"


def _withheld(error: BaseException, seen: set[int]) -> list[str]:
    """The lines Python would print for `error` and its chain, each message replaced."""
    seen.add(id(error))
    lines: list[str] = []
    cause, context = error.__cause__, error.__context__
    if cause is not None and id(cause) not in seen:
        lines += _withheld(cause, seen)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not error.__suppress_context__ and id(context) not in seen:
        lines += _withheld(context, seen)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if error.__traceback__ is not None:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.format_tb(error.__traceback__)
    lines.append(_said(error) + "\n")
    return lines


def json_lines() -> logging.Formatter:
    """One JSON object a line: `at`, `level`, `logger`, `message` (with its traceback, as
    `Withheld` made it)."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "at", "levelname": "level", "name": "logger"},
    )


def log_off_the_loop(
    level: str, fmt: str | logging.Formatter, stream: TextIO | None = None
) -> QueueListener:
    """Send every log record of the process through a bounded queue to a thread that writes
    them to `stream` (stderr) in `fmt` (a format string, or a formatter: `json_lines()`); the
    root logger at `level`. Replaces the handlers the root logger had. The listener is
    returned; at exit its queue is written out (bounded)."""
    writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(fmt if isinstance(fmt, logging.Formatter) else logging.Formatter(fmt))
    lines: queue.Queue[logging.LogRecord] = queue.Queue(LOG_QUEUE_LINES)
    listener = QueueListener(lines, writer, respect_handler_level=False)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for running in _listeners:  # set up again (a test, `demo`): the old writer finishes first
        _finish(running)
    _listeners[:] = [listener]
    queued = _BoundedQueueHandler(lines)
    queued.setFormatter(Withheld())  # the message and its traceback are made here (prepare)
    root.addHandler(queued)
    root.setLevel(level)
    listener.start()
    return listener


_listeners: list[QueueListener] = []


def flush(bound_s: float = LOG_EXIT_WAIT_S) -> None:
    """Wait, `bound_s` at most, until every queued line is written: before a line written
    straight to stderr (a refusal's), which must come after the log lines that led to it."""
    deadline = time.monotonic() + bound_s
    for listener in _listeners:
        lines = listener.queue
        while getattr(lines, "unfinished_tasks", 0) and time.monotonic() < deadline:
            time.sleep(0.005)  # the writer thread's progress, bounded


def _finish(listener: QueueListener) -> None:
    """Let the writer write what is queued and end, waiting `LOG_EXIT_WAIT_S` at most (its
    thread is a daemon: one blocked on a full pipe does not hold the process)."""
    with contextlib.suppress(queue.Full):  # a writer behind is given the wait, then left
        listener.enqueue_sentinel()
    thread = listener._thread  # QueueListener.stop() would join it without a bound
    if thread is not None:
        thread.join(LOG_EXIT_WAIT_S)
    listener._thread = None


@atexit.register
def _at_exit() -> None:
    for running in _listeners:
        _finish(running)
    _listeners.clear()
