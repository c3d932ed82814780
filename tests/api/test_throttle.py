"""The sign-in throttle (api/throttle.py) on a clock the test moves, the web side's count of
invalid bearer tokens (`BadTokens`: only tokens never seen good count), and the password
checks' bound (api/accounts.py `PasswordChecks`): a check never runs on the loop, and one past
the bound is refused at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.accounts import Busy, PasswordChecks
from api.throttle import (
    FREE_FAILURES,
    GOOD_REMEMBERED_S,
    LOCK_AFTER,
    WINDOW_S,
    BadTokens,
    Throttle,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_after_the_free_failures_then_the_key_locks() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    waits = []
    for _ in range(LOCK_AFTER):
        clock.now += throttle.wait_s("nina")  # the test waits out every wait
        assert throttle.wait_s("nina") == 0.0
        throttle.failed("nina")
        waits.append(throttle.wait_s("nina"))
    assert waits[: FREE_FAILURES - 1] == [0.0] * (FREE_FAILURES - 1)
    assert waits[FREE_FAILURES - 1 : -1] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert throttle.locked("nina")
    assert waits[-1] == WINDOW_S  # locked for the window from the last failure
    assert throttle.wait_s("other") == 0.0  # per key
    clock.now += WINDOW_S
    assert throttle.wait_s("nina") == 0.0
    assert not throttle.locked("nina")


def test_a_success_forgets_the_failures_and_old_failures_are_forgotten() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    for _ in range(FREE_FAILURES):
        throttle.failed("nina")
        throttle.failed("10.0.0.7")
    assert throttle.wait_s("nina") == 1.0
    throttle.succeeded("nina")
    assert throttle.wait_s("nina") == 0.0
    clock.now += WINDOW_S + 1
    assert throttle.wait_s("10.0.0.7") == 0.0


def test_the_keys_are_bounded_the_oldest_forgotten_first() -> None:
    throttle = Throttle(max_keys=3, clock=Clock())
    for key in ("a", "b", "c", "d"):
        for _ in range(FREE_FAILURES):
            throttle.failed(key)
    assert throttle.wait_s("a") == 0.0
    assert [throttle.wait_s(k) for k in ("b", "c", "d")] == [1.0, 1.0, 1.0]


def test_invalid_tokens_count_per_address_and_a_token_seen_good_is_no_guess() -> None:
    clock = Clock()
    tokens = BadTokens(clock=clock)
    tokens.good("station")
    for n in range(FREE_FAILURES):
        assert tokens.refused(f"guess {n}", "10.0.0.7")  # never seen good: counted
    assert tokens.wait_s("10.0.0.7") == 1.0
    assert tokens.wait_s("10.0.0.8") == 0.0  # per address
    assert tokens.seen_good("station")  # whatever its address's count
    # a token seen good, refused later (revoked, signed out): forgotten, not counted
    assert not tokens.refused("station", "10.0.0.7")
    assert not tokens.seen_good("station")
    assert tokens.wait_s("10.0.0.7") == 1.0
    assert tokens.refused("station", "10.0.0.7")  # once forgotten, it counts like any other
    tokens.good("dashboard")
    tokens.forget("dashboard")  # signed out through the web side
    assert not tokens.seen_good("dashboard")


def test_a_token_seen_good_is_remembered_for_a_shift_and_the_table_is_bounded() -> None:
    clock = Clock()
    tokens = BadTokens(max_keys=2, clock=clock)
    tokens.good("a")
    clock.now += GOOD_REMEMBERED_S - 1
    assert tokens.seen_good("a")
    clock.now += 1
    assert not tokens.seen_good("a")
    for digest in ("b", "c", "d"):
        tokens.good(digest)
    assert [tokens.seen_good(d) for d in ("b", "c", "d")] == [False, True, True]
    tokens.good("c")  # seen good again: the newest
    tokens.good("e")
    assert [tokens.seen_good(d) for d in ("c", "d", "e")] == [True, False, True]


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.2, 899.5)] == ["1", "1", "2", "900"]


async def test_a_check_runs_off_the_loop_and_one_past_the_bound_is_busy() -> None:
    checks = PasswordChecks(at_once=2)
    release = threading.Event()
    threads: list[str] = []

    def slow() -> bool:
        threads.append(threading.current_thread().name)
        return release.wait(10)

    try:
        first = asyncio.create_task(checks(slow))
        second = asyncio.create_task(checks(slow))
        await asyncio.sleep(0)  # both admitted
        assert checks.in_flight == 2
        with pytest.raises(Busy):
            await checks(slow)
        # the loop is free while the checks wait: it answers at once
        async with asyncio.timeout(1):
            await asyncio.sleep(0.01)
        release.set()
        assert await first
        assert await second
        assert threads
        assert all(t.startswith("password check") for t in threads)
        assert threading.current_thread().name not in threads
    finally:
        release.set()
        checks.close()
