"""systemd's readiness and watchdog protocol (sd_notify(3)) without libsystemd.

`notify("READY=1")` sends one datagram to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path,
or an abstract name written with a leading `@`). Outside systemd the variable is unset and
`notify` returns False without doing anything, so the service runs the same from a shell.

`feed_watchdog()` runs as an asyncio task: it sends `WATCHDOG=1` every half of
`$WATCHDOG_USEC` (config/pumpctl-kernel.service: `WatchdogSec=`). It is fed *from the event loop* on
purpose: a loop that is blocked (a synchronous call that hangs, a busy loop) supervises no pump
and answers no reaction press, and then the watchdog goes hungry and systemd kills and restarts
the service (`Restart=on-failure`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["feed_watchdog", "notify", "notify_address", "start_watchdog", "watchdog_interval_s"]

_log = logging.getLogger("pumpctl.sdnotify")


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The socket `$NOTIFY_SOCKET` names, as `socket.connect` takes it (None when unset).

    `@name` is Linux's abstract namespace (a leading NUL byte); other forms systemd knows
    (`vsock:`) are not used on a gateway and count as unset.
    """
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1", "WATCHDOG=1", "STOPPING=1"); True when it was sent.

    False, and nothing raised, when `$NOTIFY_SOCKET` is unset or the socket cannot be reached
    (logged): a notification is never worth stopping the service for.
    """
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        _log.warning("sd_notify %s to %r failed: %s", state, address.lstrip("\0"), exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """`$WATCHDOG_USEC` in seconds, or None when there is no watchdog for this process.

    None when the variable is unset or not a positive integer, or when `$WATCHDOG_PID` is set
    and is not this process (the variables were inherited from a parent that is watched).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


async def feed_watchdog(interval_s: float, environ: Mapping[str, str] | None = None) -> None:
    """Send "WATCHDOG=1" now and then every `interval_s / 2` until cancelled."""
    while True:
        notify("WATCHDOG=1", environ)
        await asyncio.sleep(interval_s / 2)


def start_watchdog(environ: Mapping[str, str] | None = None) -> asyncio.Task[None] | None:
    """The watchdog feeder as a task of the running loop, or None when no watchdog is asked
    for (the caller cancels the task when the service has stopped)."""
    interval = watchdog_interval_s(environ)
    if interval is None or notify_address(environ) is None:
        return None
    _log.info("feeding the systemd watchdog every %.3g s", interval / 2)
    return asyncio.create_task(feed_watchdog(interval, environ), name="sd-watchdog")
