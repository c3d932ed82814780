"""Monotonic seconds that leave out the time this process was not running.

A process SIGSTOPped (a debugger, `kill -STOP`, a frozen container) and woken again sees every
write that was under way "take" the whole pause: a bound on `time.monotonic()` would call the
database slow (the store degraded, every action answered "not yet recorded") although the
database answered at once and it was the process that did not run. A CI run saw exactly that
(tests/faults/test_kernel_faults.py, the kernel SIGSTOPped past the link timeout).

`AwakeClock.now()` is `time.monotonic()` less every pause seen: a thread of its own ticks every
`tick_s`; a tick late by more than `pause_s` means the whole process did not run meanwhile (a
database that does not answer blocks the writer thread, never this one), and the lateness past
`pause_s` is left out (so the clock never steps back: it stands still during a pause). A pause
still going on when `now()` is asked (its caller runs, so it has just ended, and the ticker has
not yet woken) is left out as well, so the order in which the threads wake after SIGCONT does
not matter. The ticker is a daemon: it costs ten wake-ups a second and holds nothing.
"""

from __future__ import annotations

import threading
import time

__all__ = ["PAUSE_S", "TICK_S", "AwakeClock"]

#: Seconds between two ticks of the ticker thread.
TICK_S = 0.1
#: A tick this much later than due is a pause of the whole process (far above the interpreter's
#: switch interval, 5 ms, and a busy machine's scheduling delay).
PAUSE_S = 0.5


class AwakeClock:
    """Monotonic seconds, pauses of the whole process left out (start the ticker first)."""

    def __init__(self, *, tick_s: float = TICK_S, pause_s: float = PAUSE_S) -> None:
        self.tick_s = tick_s
        self.pause_s = pause_s
        self._lock = threading.Lock()
        self._paused_s = 0.0  # pauses seen by the ticker
        self._last = time.monotonic()  # the ticker's last tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="awake clock", daemon=True)

    def start(self) -> None:
        with self._lock:
            self._last = time.monotonic()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)

    @property
    def paused_s(self) -> float:
        """Seconds of pauses seen so far (the one going on included)."""
        now = time.monotonic()
        with self._lock:
            return self._paused_s + self._pending(now)

    def now(self) -> float:
        """`time.monotonic()` less the pauses of the process seen so far."""
        now = time.monotonic()
        with self._lock:
            return now - self._paused_s - self._pending(now)

    def _pending(self, now: float) -> float:
        """The pause going on at `now` that the ticker has not counted yet (lock held)."""
        late = now - self._last - self.tick_s - self.pause_s
        return late if late > 0.0 and self._thread.is_alive() else 0.0

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            with self._lock:
                late = now - self._last - self.tick_s - self.pause_s
                if late > 0.0:
                    self._paused_s += late
                self._last = now
