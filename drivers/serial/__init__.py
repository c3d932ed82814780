"""New Era RS-232 serial driver: codec (pure framing), protocol (line and pump), transport."""

from drivers.serial.codec import (
    Command,
    CommandDecoder,
    FrameError,
    Reply,
    ReplyDecoder,
    crc16_xmodem,
    decode_command,
    decode_reply,
    format_number,
    parse_number,
)
from drivers.serial.protocol import (
    DEFAULT_BAUD,
    DEFAULT_SAFE_MODE_S,
    LineMember,
    Priority,
    SerialLine,
    SerialPump,
    check_line_capacity,
    line_load,
)
from drivers.serial.transport import TransportError, open_serial

__all__ = [
    "DEFAULT_BAUD",
    "DEFAULT_SAFE_MODE_S",
    "Command",
    "CommandDecoder",
    "FrameError",
    "LineMember",
    "Priority",
    "Reply",
    "ReplyDecoder",
    "SerialLine",
    "SerialPump",
    "TransportError",
    "check_line_capacity",
    "crc16_xmodem",
    "decode_command",
    "decode_reply",
    "format_number",
    "line_load",
    "open_serial",
    "parse_number",
]
