"""The port: open a serial line as an asyncio stream pair (device, pseudo-terminal or socket://).

pyserial's `serial_for_url` through pyserial-asyncio-fast, so `/dev/ttyUSB0`, `/dev/pts/7` and
`socket://host:port` all work. Nothing protocol-specific lives here.

Two failures are told apart: a port that cannot be opened *now* (`TransportError`: no such
device, adapter unplugged, nobody listening on the socket), which may appear later and is
retried by the line, and a port that can never be opened as given (`TransportConfigError`: a baud
rate a New Era pump does not have, a URL pyserial cannot read), which is a configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import serial
import serial_asyncio_fast

__all__ = [
    "BAUD_RATES",
    "Opener",
    "TransportConfigError",
    "TransportError",
    "close_stream",
    "open_serial",
]

#: Baud rates a New Era pump supports (interfaces.md section 1: 300 to 19200).
BAUD_RATES = (300, 1200, 2400, 9600, 19200)

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: How a line opens its port: (url, baud) -> (reader, writer). Tests may pass their own.
Opener = Callable[[str, int], Awaitable[StreamPair]]


class TransportError(ConnectionError):
    """The port could not be opened (names the url); it may be there later."""


class TransportConfigError(TransportError):
    """The port can never be opened as configured (names the url or the baud rate)."""


async def open_serial(url: str, baud: int) -> StreamPair:
    """Open `url` at `baud` baud, 8N1, raw; TransportError if it cannot be opened now,
    TransportConfigError if it never can (a bad baud rate, a URL pyserial cannot read)."""
    if baud not in BAUD_RATES:
        raise TransportConfigError(f"baud {baud}: a New Era pump supports {BAUD_RATES}")
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=url, baudrate=baud, bytesize=8, parity="N", stopbits=1
        )
    except (serial.SerialException, OSError) as exc:
        raise TransportError(f"cannot open serial port {url!r}: {exc}") from exc
    except (ValueError, LookupError) as exc:  # pyserial: unknown protocol or URL option
        raise TransportConfigError(f"serial port {url!r} cannot be opened as given: {exc}") from exc
    return reader, writer


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close the port and wait until it is closed (never raises for a lost port)."""
    writer.close()
    with contextlib.suppress(OSError, serial.SerialException):
        await writer.wait_closed()
    # the transport finishes closing in a task of its own: let it end before we return
    await asyncio.sleep(0)
