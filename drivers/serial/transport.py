"""The port: open a serial line as an asyncio stream pair (device, pseudo-terminal or socket://).

pyserial's `serial_for_url` through pyserial-asyncio-fast, so `/dev/ttyUSB0`, `/dev/pts/7` and
`socket://host:port` all work. Nothing protocol-specific lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import serial
import serial_asyncio_fast

__all__ = ["BAUD_RATES", "Opener", "TransportError", "close_stream", "open_serial"]

#: Baud rates a New Era pump supports (interfaces.md section 1: 300 to 19200).
BAUD_RATES = (300, 1200, 2400, 9600, 19200)

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: How a line opens its port: (url, baud) -> (reader, writer). Tests may pass their own.
Opener = Callable[[str, int], Awaitable[StreamPair]]


class TransportError(ConnectionError):
    """The port could not be opened (names the url)."""


async def open_serial(url: str, baud: int) -> StreamPair:
    """Open `url` at `baud` baud, 8N1, raw; TransportError if it cannot be opened."""
    if baud not in BAUD_RATES:
        raise TransportError(f"baud {baud}: a New Era pump supports {BAUD_RATES}")
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=url, baudrate=baud, bytesize=8, parity="N", stopbits=1
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise TransportError(f"cannot open serial port {url!r}: {exc}") from exc
    return reader, writer


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close the port and wait until it is closed (never raises for a lost port)."""
    writer.close()
    with contextlib.suppress(OSError, serial.SerialException):
        await writer.wait_closed()
    # the transport finishes closing in a task of its own: let it end before we return
    await asyncio.sleep(0)
