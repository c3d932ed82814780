"""The processes' log goes through a bounded queue to a thread of its own
(pumpctl/cli/logsetup.py, issue 18: nothing slow on a stop's path). The real kernel with a log
reader that stopped reading is tried in tests/faults/test_kernel_faults.py; here, the queue's
bound and its account of what it dropped."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from pumpctl.cli.logsetup import LOG_QUEUE_LINES, json_lines, log_off_the_loop


class _StuckStream(io.StringIO):
    """A stream whose writes wait until `free` is set (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.free = threading.Event()

    def write(self, text: str) -> int:
        self.free.wait(30)
        return super().write(text)


@pytest.fixture
def stuck() -> Iterator[_StuckStream]:
    stream = _StuckStream()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield stream
    stream.free.set()
    log_off_the_loop("WARNING", "%(message)s", io.StringIO())  # the test's listener ends
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_logging_never_waits_for_a_stuck_writer_and_says_what_it_dropped(
    stuck: _StuckStream,
) -> None:
    """More lines than the queue holds, logged while the writer cannot write: every call
    returns (none waits for the writer), the lines beyond the bound are dropped and counted,
    and once the writer writes again the log says how many it lost before the next line."""
    listener = log_off_the_loop("INFO", "%(levelname)s %(message)s", stuck)
    extra = 50
    log = logging.getLogger("pumpctl.test")

    def flood() -> None:
        for n in range(LOG_QUEUE_LINES + extra):
            log.info("line %d", n)

    logging_thread = threading.Thread(target=flood)
    logging_thread.start()
    logging_thread.join(20)
    assert not logging_thread.is_alive(), "a log call waited for the stuck writer"
    stuck.free.set()
    deadline = time.monotonic() + 20
    while listener.queue.qsize() and time.monotonic() < deadline:  # the writer catches up
        time.sleep(0.01)  # polling a condition with a deadline
    log.warning("after the gap")
    log_off_the_loop("WARNING", "%(message)s", io.StringIO())  # writes out what is queued
    lines = stuck.getvalue().splitlines()
    assert lines[-1] == "WARNING after the gap"
    [gap] = [line for line in lines if "log lines dropped" in line]
    dropped = int(gap.split()[1])
    # the writer holds one line while it waits; the queue the bound; the rest were dropped
    assert extra - 1 <= dropped <= extra, gap
    assert len(lines) == LOG_QUEUE_LINES + extra - dropped + 2  # the gap's line, the last line
    assert lines.index(gap) == len(lines) - 2  # said before the next line, not lost among them


def test_json_lines_stay_one_object_a_line_whatever_a_message_holds(stuck: _StuckStream) -> None:
    """`log_format = "json"`: a message with quotes, a backslash and lines of its own, and a
    traceback, each come out as one JSON object a line with the message whole (a collector
    that reads lines never sees half an object); the exception's own words are withheld."""
    stuck.free.set()
    log_off_the_loop("INFO", json_lines(), stuck)
    log = logging.getLogger("pumpctl.test")
    said = 'pump "pump-1" said \\ on\ntwo lines'
    log.warning("%s", said)
    mrn = "MRN-" + "123"
    try:
        int(mrn)
    except ValueError:
        log.exception("a route failed")
    log_off_the_loop("WARNING", "%(message)s", io.StringIO())  # writes out what is queued
    lines = stuck.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == said
    assert (first["level"], first["logger"]) == ("WARNING", "pumpctl.test")
    assert first["at"][:4].isdigit()
    assert second["message"].startswith("a route failed\nTraceback (most recent call last):")
    assert "ValueError: (message withheld" in second["message"]
    assert "MRN-123" not in lines[1]
