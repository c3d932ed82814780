"""A pytest plugin that accounts each test's CPU, for `scripts/test-cpu` (issue 22: the suite
is bound by CPU, so a faster suite is one that spends less of it; where it goes says what to
change). Loaded only by that script (`-p cpu_account`), never by `scripts/test`.

For each test (set-up, call and tear-down) it appends one line to the file
`$PUMPCTL_CPU_ACCOUNT.<worker>`: the test's id, its wall seconds, the CPU seconds of the pytest
process itself, and those of the processes it started and waited for (`RUSAGE_CHILDREN`: a
kernel, its web side, a simulator, Chromium). A process is counted when it is waited for: a
module's Chromium or a page test's service started ahead (tests/page/conftest.py) is charged to
the test during which it ended.
"""

from __future__ import annotations

import functools
import os
import resource
import time
from collections.abc import Generator
from typing import TextIO

import pytest

#: The environment variable naming the output files' common prefix.
OUTPUT = "PUMPCTL_CPU_ACCOUNT"


@functools.cache
def _file() -> TextIO:
    """This worker's file, opened once (line-buffered: a worker that dies keeps its lines)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return open(f"{os.environ[OUTPUT]}.{worker}", "a", buffering=1)


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    del nextitem
    if OUTPUT not in os.environ:
        return (yield)
    began = time.monotonic()
    own, children = _cpu()
    try:
        return (yield)
    finally:
        own_after, children_after = _cpu()
        wall = time.monotonic() - began
        _file().write(
            f"{item.nodeid}\t{wall:.3f}\t{own_after - own:.3f}\t{children_after - children:.3f}\n"
        )
