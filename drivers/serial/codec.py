"""New Era RS-232 framing (interfaces.md section 1): frames as values, a resumable decoder. Pure.

Bytes in, frames out: no I/O, no clock. The driver encodes `Command`s and decodes `Reply`s; the
simulator, the device side of the same stack, decodes `Command`s and encodes `Reply`s with the
same code, so a framing bug cannot hide symmetrically (golden vectors from the manual pin it).

- Basic command: `[addr]<command>[data]\\r`; basic reply: `STX addr2 status [data] ETX`.
- Safe frame (either direction): `STX len payload crc_hi crc_lo ETX`, len = len(payload) + 4,
  crc = CRC-16/XMODEM of the payload.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "ALARM_CODES",
    "BITS_PER_BYTE",
    "ERROR_CODES",
    "ETX",
    "MAX_BUFFER",
    "MAX_NUMBER",
    "MAX_PAYLOAD",
    "MAX_SAFE_MODE_S",
    "PACKET_GAP_S",
    "RATE_UNITS",
    "STATUS_CHARS",
    "STX",
    "VOLUME_UNITS",
    "Command",
    "CommandDecoder",
    "Decoder",
    "FrameError",
    "Reply",
    "ReplyDecoder",
    "crc16_xmodem",
    "decode_command",
    "decode_reply",
    "format_number",
    "parse_dispensed",
    "parse_number",
    "parse_quantity",
    "wire_seconds",
]

STX = 0x02
ETX = 0x03
CR = 0x0D

#: Status characters of a reply (I infusing, W withdrawing, S stopped, P paused, T timed pause,
#: U waiting for trigger, X purging); `A` marks an alarm reply `A?<code>`.
STATUS_CHARS = "IWSPTUX"
ALARM_STATUS = "A"
#: Alarm codes: R power reset, S motor stalled, T safe-mode timeout, E program error,
#: O out of range.
ALARM_CODES = "RSTEO"
#: Error replies `?<code>`: unknown command, not applicable, out of range, bad packet, ignored.
ERROR_CODES = ("", "NA", "OOR", "COM", "IGN")

#: A gap of more than this (wire seconds) inside a packet discards it (interfaces.md section 1):
#: the pump's rule, which the driver applies to replies too. The decoders have no clock: their
#: owners (line and simulator) measure the gap and `reset()` them.
PACKET_GAP_S = 0.5
#: 8N1 on the wire: start bit, 8 data bits, stop bit.
BITS_PER_BYTE = 10
#: `SAF n`: the longest safe-mode period a pump accepts (n = 1..255; 0 is basic mode).
MAX_SAFE_MODE_S = 255
#: The largest number a 4-digit field holds (rates, volumes).
MAX_NUMBER = 9999.0

#: Rate units and their factor to ml/h; volume units and their factor to ml.
RATE_UNITS: dict[str, float] = {"MH": 1.0, "MM": 60.0, "UH": 0.001, "UM": 0.06}
VOLUME_UNITS: dict[str, float] = {"ML": 1.0, "UL": 0.001}

#: Longest payload accepted. Kept below 44 so that a safe frame's length byte (payload + 4) can
#: never be an ASCII digit: that is how the decoder tells a safe reply from a basic one.
MAX_PAYLOAD = 40
SAFE_OVERHEAD = 4  # the length byte, two CRC bytes and ETX
MIN_REPLY_PAYLOAD = 3  # addr2 + status
#: Most bytes a decoder holds while waiting for the end of a frame.
MAX_BUFFER = 1024

_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_NUMBER = re.compile(r"(\d*)(\.?)(\d*)")
_QUANTITY = re.compile(r"(\d*\.?\d*)([A-Z]{2})")
_DISPENSED = re.compile(r"I(\d*\.?\d*)W(\d*\.?\d*)([A-Z]{2})")
_IGNORED_IN_COMMANDS = str.maketrans("", "", " \t\n")


def wire_seconds(n_bytes: int, baud: int) -> float:
    """Time `n_bytes` take on the wire at `baud` (8N1)."""
    return n_bytes * BITS_PER_BYTE / baud


def crc16_xmodem(payload: bytes) -> int:
    """CRC-16/XMODEM of `payload` (the safe-mode check; b"SAF0" gives 0x5543)."""
    return binascii.crc_hqx(payload, 0)


def _safe_frame(payload: bytes) -> bytes:
    crc = crc16_xmodem(payload)
    return bytes([STX, len(payload) + SAFE_OVERHEAD]) + payload + crc.to_bytes(2, "big") + b"\x03"


class FrameError(ValueError):
    """Bytes that are not a valid frame. `consumed` bytes must be dropped before decoding on.

    `kind` is `garbage` (no frame start), `length` (impossible length), `check` (CRC or missing
    ETX), `invalid` (well framed, meaningless content) or `overflow` (too long, never ended).
    """

    def __init__(self, kind: str, message: str, consumed: int, *, unfinished: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.consumed = consumed
        self.unfinished = unfinished  # the bad frame goes on in bytes not received yet


# -- numbers ---------------------------------------------------------------------------------


def format_number(value: float, *, point: bool = True) -> str:
    """`value` in at most 4 digits and one point, at most 3 decimals, to 4 significant digits.

    With `point` the result always carries a decimal point (`1000.`), as query replies must.
    Raises ValueError for a negative, non-finite or too large (>= 9999.5) value.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"number {value!r} cannot be sent: must be finite and >= 0")
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if sum(c.isdigit() for c in text) <= 4:
            break
    else:
        raise ValueError(f"number {value!r} does not fit in 4 digits")
    if "." not in text and point:
        text += "."
    return text


def parse_number(text: str) -> float:
    """Parse a protocol number: at most 4 digits, one optional point (`1200`, `1200.`, `12.00`)."""
    match = _NUMBER.fullmatch(text)
    digits = len(match[1]) + len(match[3]) if match else 0
    if match is None or digits == 0 or digits > 4 or len(match[3]) > 3:
        raise ValueError(f"number {text!r}: expected at most 4 digits and one decimal point")
    return float(text)


def parse_quantity(text: str, units: dict[str, float]) -> tuple[float, str]:
    """Parse `<number><unit>` (`200.0MH`), the unit one of `units`. Returns (number, unit)."""
    match = _QUANTITY.fullmatch(text)
    if match is None or match[2] not in units:
        raise ValueError(f"quantity {text!r}: expected a number and one of {', '.join(units)}")
    return parse_number(match[1]), match[2]


def parse_dispensed(text: str) -> tuple[float, float, str]:
    """Parse a DIS reply `I<infused>W<withdrawn><ML|UL>` -> (infused, withdrawn, unit)."""
    match = _DISPENSED.fullmatch(text)
    if match is None or match[3] not in VOLUME_UNITS:
        raise ValueError(f"dispensed volume {text!r}: expected I<number>W<number><ML|UL>")
    return parse_number(match[1]), parse_number(match[2]), match[3]


# -- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command to the pump at `address` (None: no address sent). `name` "" is a status query."""

    address: int | None
    name: str = ""
    data: str = ""
    safe: bool = False

    def __post_init__(self) -> None:
        if self.address is not None and not 0 <= self.address <= 99:
            raise ValueError(f"address {self.address}: must be 0-99")
        if self.name and not (len(self.name) <= 3 and self.name.isascii() and self.name.isalpha()):
            raise ValueError(f"command name {self.name!r}: expected up to 3 letters")
        if not (self.data.isascii() and self.data.isprintable()):
            raise ValueError(f"command data {self.data!r}: expected printable ASCII")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"command {self.payload!r}: longer than {MAX_PAYLOAD} bytes")

    @property
    def payload(self) -> bytes:
        """The command's text as sent: `[addr]<command>[data]`."""
        address = "" if self.address is None else str(self.address)
        return f"{address}{self.name}{self.data}".encode("ascii")

    def to_bytes(self) -> bytes:
        """The command framed: basic (`...\\r`) or safe (`STX len ... crc ETX`)."""
        return _safe_frame(self.payload) if self.safe else self.payload + b"\r"

    @classmethod
    def from_payload(cls, payload: bytes, *, safe: bool) -> Command:
        """Parse a command's text; spaces and case are ignored as by the pump."""
        if _PRINTABLE.fullmatch(payload) is None:
            raise FrameError("invalid", f"command {payload!r}: not printable ASCII", len(payload))
        text = payload.decode("ascii").translate(_IGNORED_IN_COMMANDS).upper()
        digits = len(text) - len(text.lstrip("0123456789"))
        if digits > 2:
            raise FrameError("invalid", f"command {text!r}: address over 2 digits", len(payload))
        address = int(text[:digits]) if digits else None
        rest = text[digits:]
        letters = len(rest) - len(rest.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        name_len = min(letters, 3)
        try:
            return cls(address, rest[:name_len], rest[name_len:], safe)
        except ValueError as exc:
            raise FrameError("invalid", str(exc), len(payload)) from None

    @classmethod
    def from_bytes(cls, frame: bytes) -> Command:
        """Decode exactly one framed command (FrameError otherwise)."""
        return _exactly_one(decode_command, frame)


@dataclass(frozen=True, slots=True)
class Reply:
    """A pump's reply: `status` is a status char or `A` (alarm, data `?<code>`)."""

    address: int
    status: str
    data: str = ""
    safe: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 99:
            raise ValueError(f"address {self.address}: must be 0-99")
        if self.status == ALARM_STATUS:
            if len(self.data) != 2 or self.data[0] != "?" or self.data[1] not in ALARM_CODES:
                raise ValueError(f"alarm {self.data!r}: expected ?R, ?S, ?T, ?E or ?O")
        elif len(self.status) != 1 or self.status not in STATUS_CHARS:
            raise ValueError(f"status {self.status!r}: expected one of {STATUS_CHARS} or A")
        if not (self.data.isascii() and self.data.isprintable()):
            raise ValueError(f"reply data {self.data!r}: expected printable ASCII")
        is_error = self.data.startswith("?") and self.status != ALARM_STATUS
        if is_error and self.data[1:] not in ERROR_CODES:
            raise ValueError(f"error {self.data!r}: expected ?, ?NA, ?OOR, ?COM or ?IGN")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"reply {self.payload!r}: longer than {MAX_PAYLOAD} bytes")

    @property
    def alarm(self) -> str | None:
        """The alarm code (R, S, T, E, O) of an alarm reply, else None."""
        return self.data[1] if self.status == ALARM_STATUS else None

    @property
    def error(self) -> str | None:
        """The error code of an error reply ("" for a bare `?`, "NA", "OOR"...), else None."""
        if self.status != ALARM_STATUS and self.data.startswith("?"):
            return self.data[1:]
        return None

    @property
    def payload(self) -> bytes:
        """The reply's text: `addr2 status [data]`."""
        return f"{self.address:02d}{self.status}{self.data}".encode("ascii")

    def to_bytes(self) -> bytes:
        """The reply framed: basic (`STX ... ETX`) or safe (`STX len ... crc ETX`)."""
        if self.safe:
            return _safe_frame(self.payload)
        return b"\x02" + self.payload + b"\x03"

    @classmethod
    def from_payload(cls, payload: bytes, *, safe: bool) -> Reply:
        """Parse a reply's text `addr2 status [data]`."""
        if len(payload) < MIN_REPLY_PAYLOAD or _PRINTABLE.fullmatch(payload) is None:
            raise FrameError("invalid", f"reply {payload!r}: too short or not ASCII", 0)
        text = payload.decode("ascii")
        if not (text[:2].isdigit()):
            raise FrameError("invalid", f"reply {text!r}: no two-digit address", 0)
        try:
            return cls(int(text[:2]), text[2], text[3:], safe)
        except ValueError as exc:
            raise FrameError("invalid", str(exc), 0) from None

    @classmethod
    def from_bytes(cls, frame: bytes) -> Reply:
        """Decode exactly one framed reply (FrameError otherwise)."""
        return _exactly_one(decode_reply, frame)


F = TypeVar("F", Command, Reply)


def _exactly_one(decode: Callable[[bytes], tuple[int, F | None]], frame: bytes) -> F:
    consumed, value = decode(frame)
    if value is None or consumed != len(frame):
        raise FrameError("invalid", f"{frame!r} is not exactly one frame", len(frame))
    return value


# -- decoding --------------------------------------------------------------------------------


def _decode_safe(buf: bytes, min_payload: int) -> tuple[int, bytes | None]:
    """A safe frame at the start of `buf` (buf[0] is STX): (consumed, payload | None)."""
    if len(buf) < 2:
        return 0, None
    length = buf[1]
    if not min_payload + SAFE_OVERHEAD <= length <= MAX_PAYLOAD + SAFE_OVERHEAD:
        raise FrameError("length", f"safe frame length byte {length} out of range", 1)
    total = length + 1
    if len(buf) < total:
        return 0, None
    if buf[total - 1] != ETX:
        raise FrameError("check", "safe frame does not end with ETX", 1)
    payload = buf[2 : total - 3]
    if int.from_bytes(buf[total - 3 : total - 1], "big") != crc16_xmodem(payload):
        raise FrameError("check", f"safe frame {payload!r} failed its CRC", 1)
    return total, payload


def decode_reply(buf: bytes) -> tuple[int, Reply | None]:
    """Decode one reply from the start of `buf` -> (bytes consumed, reply | None: need more).

    Raises FrameError (with `consumed`) for bytes to drop: the caller drops them and goes on.
    A frame that failed its CRC is never returned.
    """
    if not buf:
        return 0, None
    start = buf.find(STX)
    if start != 0:
        consumed = len(buf) if start < 0 else start
        raise FrameError("garbage", f"{consumed} byte(s) before a frame start", consumed)
    if len(buf) < 2:
        return 0, None
    if 0x30 <= buf[1] <= 0x39:  # an address digit: a basic reply `STX addr2 ... ETX`
        limit = MAX_PAYLOAD + 2
        end = buf.find(ETX, 1, limit)
        restart = buf.find(STX, 1, end if end >= 0 else limit)
        if restart >= 0:
            raise FrameError("garbage", "basic reply cut short by a new frame start", restart)
        if end < 0:
            if len(buf) >= limit:
                raise FrameError("overflow", f"basic reply longer than {MAX_PAYLOAD} bytes", 1)
            return 0, None
        try:
            return end + 1, Reply.from_payload(buf[1:end], safe=False)
        except FrameError as exc:
            raise FrameError(exc.kind, str(exc), end + 1) from None
    consumed, payload = _decode_safe(buf, MIN_REPLY_PAYLOAD)
    if payload is None:
        return 0, None
    try:
        return consumed, Reply.from_payload(payload, safe=True)
    except FrameError as exc:
        raise FrameError(exc.kind, str(exc), consumed) from None


def decode_command(buf: bytes) -> tuple[int, Command | None]:
    """Decode one command from the start of `buf` -> (bytes consumed, command | None: need more).

    Raises FrameError (with `consumed`) for bytes to drop. A safe frame that failed its CRC is
    never returned. A bare `\\r` is a status query with no address.
    """
    if not buf:
        return 0, None
    if buf[0] == STX:
        consumed, payload = _decode_safe(buf, 0)
        if payload is None:
            return 0, None
        try:
            return consumed, Command.from_payload(payload, safe=True)
        except FrameError as exc:
            raise FrameError(exc.kind, str(exc), consumed) from None
    limit = MAX_PAYLOAD + 1
    end = buf.find(CR, 0, limit)
    restart = buf.find(STX, 0, end if end >= 0 else limit)
    if restart >= 0:
        raise FrameError("garbage", "basic command cut short by a safe frame start", restart)
    if end < 0:
        if len(buf) < limit:
            return 0, None
        message = f"basic command longer than {MAX_PAYLOAD} bytes"
        ends = [i for i in (buf.find(CR, limit), buf.find(STX, limit)) if i >= 0]
        if not ends:
            raise FrameError("overflow", message, len(buf), unfinished=True)
        end = min(ends)
        raise FrameError("overflow", message, end + 1 if buf[end] == CR else end)
    try:
        return end + 1, Command.from_payload(buf[:end], safe=False)
    except FrameError as exc:
        raise FrameError(exc.kind, str(exc), end + 1) from None


class Decoder(Generic[F]):
    """Incremental decoder: feed bytes as they come, get whole frames; never raises.

    Bad bytes are dropped and counted (`errors`, `last_error`, `on_error`); the buffer is capped
    at `max_buffer` bytes. Pure: no I/O and no clock (the caller applies the packet-gap rule
    with `reset()`).
    """

    def __init__(
        self,
        decode: Callable[[bytes], tuple[int, F | None]],
        *,
        max_buffer: int = MAX_BUFFER,
        on_error: Callable[[FrameError], None] | None = None,
    ) -> None:
        self._decode: Callable[[bytes], tuple[int, F | None]] = decode
        self._buf = bytearray()
        self._max_buffer = max_buffer
        self._on_error = on_error
        self.errors = 0
        self.last_error: FrameError | None = None

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame (for example after a gap of more than 0.5 s inside it)."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[F]:
        """Add `data`; return every frame now complete, in order."""
        self._buf += data
        frames: list[F] = []
        while self._buf:
            try:
                consumed, frame = self._decode(bytes(self._buf))
            except FrameError as exc:
                del self._buf[: max(exc.consumed, 1)]
                self._error(exc)
                continue
            if frame is None:
                break
            del self._buf[:consumed]
            frames.append(frame)
        if len(self._buf) > self._max_buffer:
            dropped = len(self._buf) - self._max_buffer
            del self._buf[:dropped]
            self._error(FrameError("overflow", f"buffer over {self._max_buffer} bytes", dropped))
        return frames

    def _error(self, exc: FrameError) -> None:
        self.errors += 1
        self.last_error = exc
        if self._on_error is not None:
            self._on_error(exc)


class ReplyDecoder(Decoder[Reply]):
    """Decoder of the pump-to-controller direction (the driver's side)."""

    def __init__(
        self, *, max_buffer: int = MAX_BUFFER, on_error: Callable[[FrameError], None] | None = None
    ) -> None:
        super().__init__(decode_reply, max_buffer=max_buffer, on_error=on_error)


class CommandDecoder(Decoder[Command]):
    """Decoder of the controller-to-pump direction (the simulator's side).

    After an overlong basic command it discards up to the next `\r` (or safe frame start), so
    the tail of a too-long line is never taken for a command.
    """

    def __init__(
        self, *, max_buffer: int = MAX_BUFFER, on_error: Callable[[FrameError], None] | None = None
    ) -> None:
        super().__init__(decode_command, max_buffer=max_buffer, on_error=on_error)
        self._discarding = False

    def reset(self) -> None:
        """Drop any partial frame, and any overlong line being discarded."""
        super().reset()
        self._discarding = False

    def feed(self, data: bytes) -> list[Command]:
        """Add `data`; return every command now complete, in order."""
        if self._discarding:
            ends = [i for i in (data.find(CR), data.find(STX)) if i >= 0]
            if not ends:
                return []
            self._discarding = False
            end = min(ends)
            data = data[end + 1 :] if data[end] == CR else data[end:]
        return super().feed(data)

    def _error(self, exc: FrameError) -> None:
        if exc.unfinished:
            self._discarding = True
        super()._error(exc)
