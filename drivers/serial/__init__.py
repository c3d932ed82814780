"""New Era RS-232 serial driver.

Layers: `codec` (pure framing), `status` (status characters and alarm codes -> pumpctl states
and alarms), `line` (one exchange at a time on a shared port, reconnection, line capacity),
`pump` (one pump on a line: framing choice, watchdog, commands), `transport` (the port).
"""

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
from drivers.serial.line import (
    DEFAULT_BAUD,
    DEFAULT_SAFE_MODE_S,
    LineMember,
    Priority,
    SerialLine,
    check_line_capacity,
    line_load,
)
from drivers.serial.pump import SerialPump
from drivers.serial.transport import TransportConfigError, TransportError, open_serial

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
    "TransportConfigError",
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
