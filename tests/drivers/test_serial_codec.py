"""The New Era codec: golden bytes from the manual and the spec, resumable decoding, bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial.codec import (
    MAX_BUFFER,
    RATE_UNITS,
    Command,
    CommandDecoder,
    FrameError,
    Reply,
    ReplyDecoder,
    crc16_xmodem,
    decode_command,
    decode_reply,
    format_number,
    parse_dispensed,
    parse_number,
    parse_quantity,
)

# -- golden vectors (literal bytes, not round trips) -----------------------------------------

#: The manual's safe-mode example: `SAF0` in a safe frame, CRC-16/XMODEM 0x5543.
SAF0_SAFE = b"\x02\x08SAF0\x55\x43\x03"


def test_crc_of_saf0_is_the_manual_value() -> None:
    assert crc16_xmodem(b"SAF0") == 0x5543


def test_safe_command_golden_bytes() -> None:
    assert Command(None, "SAF", "0", safe=True).to_bytes() == SAF0_SAFE
    assert Command.from_bytes(SAF0_SAFE) == Command(None, "SAF", "0", safe=True)


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (Command(0, "RAT", "200.0MH"), b"0RAT200.0MH\r"),
        (Command(12, "STP"), b"12STP\r"),
        (Command(0), b"0\r"),
        (Command(None), b"\r"),
        (Command(3, "VOL", "ML"), b"3VOLML\r"),
        (Command(0, "DIR", "INF"), b"0DIRINF\r"),
    ],
)
def test_basic_command_golden_bytes(command: Command, wire: bytes) -> None:
    assert command.to_bytes() == wire
    assert Command.from_bytes(wire) == command


def test_pump_ignores_spaces_and_case_in_commands() -> None:
    assert Command.from_bytes(b"0 rat 200 mh\r") == Command(0, "RAT", "200MH")
    # nesp-lib sends microlitres per minute
    assert Command.from_bytes(b"0RAT3333.UM\r") == Command(0, "RAT", "3333.UM")


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (Reply(0, "S"), b"\x0200S\x03"),
        (Reply(0, "I", "200.0MH"), b"\x0200I200.0MH\x03"),
        (Reply(7, "S", "1000.ML"), b"\x0207S1000.ML\x03"),
        (Reply(0, "S", "NE1000V3.928"), b"\x0200SNE1000V3.928\x03"),
        (Reply(0, "A", "?S"), b"\x0200A?S\x03"),
        (Reply(0, "S", "?NA"), b"\x0200S?NA\x03"),
        (Reply(0, "S", "?"), b"\x0200S?\x03"),
    ],
)
def test_basic_reply_golden_bytes(reply: Reply, wire: bytes) -> None:
    assert reply.to_bytes() == wire
    assert Reply.from_bytes(wire) == reply


def test_safe_reply_golden_bytes() -> None:
    payload = b"00A?T"
    crc = crc16_xmodem(payload)
    wire = b"\x02\x09" + payload + bytes([crc >> 8, crc & 0xFF]) + b"\x03"
    assert Reply(0, "A", "?T", safe=True).to_bytes() == wire
    assert wire[1] == len(payload) + 4
    assert Reply.from_bytes(wire).alarm == "T"


def test_reply_alarm_and_error_accessors() -> None:
    assert Reply(0, "A", "?R").alarm == "R"
    assert Reply(0, "A", "?R").error is None
    assert Reply(0, "S", "?OOR").error == "OOR"
    assert Reply(0, "S", "?").error == ""
    assert Reply(0, "S", "200.0MH").error is None


@pytest.mark.parametrize("status", list("IWSPTUX"))
def test_every_status_char_decodes(status: str) -> None:
    assert Reply.from_bytes(b"\x0201" + status.encode() + b"\x03").status == status


@pytest.mark.parametrize("code", list("RSTEO"))
def test_every_alarm_code_decodes(code: str) -> None:
    assert Reply.from_bytes(b"\x0201A?" + code.encode() + b"\x03").alarm == code


@pytest.mark.parametrize("code", ["", "NA", "OOR", "COM", "IGN"])
def test_every_error_code_decodes(code: str) -> None:
    assert Reply.from_bytes(b"\x0201S?" + code.encode() + b"\x03").error == code


@pytest.mark.parametrize(
    "wire",
    [
        b"\x0200Q\x03",  # unknown status
        b"\x0200A?Z\x03",  # unknown alarm
        b"\x0200S?XYZ\x03",  # unknown error
        b"\x020S\x03",  # one-digit address
    ],
)
def test_meaningless_replies_are_refused(wire: bytes) -> None:
    with pytest.raises(FrameError) as info:
        decode_reply(wire)
    assert info.value.kind == "invalid"
    assert info.value.consumed == len(wire)


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (200, "200.0"),
        (1000, "1000."),
        (166.666, "166.7"),
        (12.3456, "12.35"),
        (5, "5.000"),
        (0.05, "0.050"),
        (9999.4, "9999."),
        (3333.333, "3333."),
    ],
)
def test_numbers_are_4_digits_with_a_point(value: float, text: str) -> None:
    assert format_number(value) == text


def test_number_without_trailing_point_for_commands() -> None:
    assert format_number(1000, point=False) == "1000"
    assert format_number(200, point=False) == "200.0"


@pytest.mark.parametrize("value", [-1, 9999.6, 12345, float("nan"), float("inf")])
def test_unsendable_numbers_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="number"):
        format_number(value)


@pytest.mark.parametrize(("text", "value"), [("1200", 1200), ("1200.", 1200), ("12.00", 12)])
def test_parser_accepts_the_spec_forms(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", ".", "12345", "1.2345", "1,2", "-1", "1e3"])
def test_parser_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="number"):
        parse_number(text)


def test_quantities_and_dispensed_volume() -> None:
    assert parse_quantity("200.0MH", RATE_UNITS) == (200.0, "MH")
    assert parse_dispensed("I12.34W0.000ML") == (12.34, 0.0, "ML")
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("200.0XX", RATE_UNITS)


@given(st.floats(min_value=0, max_value=9999.4, allow_nan=False))
def test_number_round_trip_within_four_significant_digits(value: float) -> None:
    text = format_number(value)
    assert sum(c.isdigit() for c in text) <= 4
    assert text.count(".") == 1
    assert len(text.partition(".")[2]) <= 3
    assert abs(parse_number(text) - value) <= max(0.0005, value * 0.0005) + 1e-9


# -- resumable decoding ----------------------------------------------------------------------


def test_partial_input_byte_at_a_time() -> None:
    frames = [Reply(0, "S", safe=True), Reply(1, "I", "200.0MH"), Reply(2, "A", "?T", safe=True)]
    wire = b"".join(f.to_bytes() for f in frames)
    decoder = ReplyDecoder()
    got: list[Reply] = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == frames
    assert decoder.errors == 0
    assert decoder.pending == 0


def test_decode_needs_more_on_a_frame_cut_in_half() -> None:
    wire = Reply(0, "S", "1000.ML", safe=True).to_bytes()
    assert decode_reply(wire[: len(wire) // 2]) == (0, None)
    decoder = ReplyDecoder()
    assert decoder.feed(wire[: len(wire) // 2]) == []
    assert decoder.feed(wire[len(wire) // 2 :]) == [Reply(0, "S", "1000.ML", safe=True)]


def test_garbage_between_frames_is_skipped_and_counted() -> None:
    a, b = Reply(0, "S"), Reply(1, "I", safe=True)
    decoder = ReplyDecoder()
    got = decoder.feed(b"\xff\x00junk" + a.to_bytes() + b"\x03\x7f more" + b.to_bytes() + b"zz")
    assert got == [a, b]
    assert decoder.errors >= 2


def test_flipped_bit_is_rejected_by_the_crc() -> None:
    wire = bytearray(Reply(0, "S", "200.0MH", safe=True).to_bytes())
    wire[5] ^= 0x04  # one bit of the payload: '2' -> '6', still printable ASCII
    seen: list[FrameError] = []
    decoder = ReplyDecoder(on_error=seen.append)
    assert decoder.feed(bytes(wire)) == []
    assert any(e.kind == "check" for e in seen)
    with pytest.raises(FrameError, match="CRC"):
        decode_reply(bytes(wire))


def test_flipped_bit_in_a_safe_command_is_never_returned() -> None:
    wire = bytearray(Command(0, "RUN", safe=True).to_bytes())
    wire[3] ^= 0x01
    assert CommandDecoder().feed(bytes(wire)) == []


def test_a_good_frame_after_a_bad_one_is_recovered() -> None:
    good = Reply(3, "S", safe=True)
    bad = bytearray(Reply(3, "I", safe=True).to_bytes())
    bad[-2] ^= 0xFF
    assert ReplyDecoder().feed(bytes(bad) + good.to_bytes()) == [good]


def test_oversized_safe_length_is_refused() -> None:
    with pytest.raises(FrameError) as info:
        decode_reply(b"\x02\x7f" + b"0" * 200)
    assert info.value.kind == "length"


def test_overlong_basic_reply_is_dropped() -> None:
    decoder = ReplyDecoder()
    assert decoder.feed(b"\x0200S" + b"9" * 200) == []
    assert decoder.errors >= 1
    assert decoder.feed(Reply(0, "S").to_bytes()) == [Reply(0, "S")]


def test_overlong_basic_command_is_discarded_to_its_end() -> None:
    decoder = CommandDecoder()
    # the tail of a too-long line must never be taken for a command, even across reads
    assert decoder.feed(b"0RAT" + b"1" * 60) == []
    assert decoder.feed(b"0STP" * 5) == []
    assert decoder.feed(b"0RUN\r0STP\r") == [Command(0, "STP")]


def test_decoder_buffer_is_capped() -> None:
    decoder = ReplyDecoder(max_buffer=64)
    decoder.feed(b"\x02\x2f")  # a plausible safe header: waits for 47 bytes
    decoder.feed(b"0" * 30)
    assert decoder.pending <= 64


def test_basic_command_cut_by_a_safe_frame_resyncs() -> None:
    decoder = CommandDecoder()
    assert decoder.feed(b"0RA" + SAF0_SAFE) == [Command(None, "SAF", "0", safe=True)]


def test_reset_discards_a_partial_packet() -> None:
    decoder = CommandDecoder()
    decoder.feed(b"0RAT2")
    decoder.reset()
    # without the reset this would have been 0RAT200.0MH
    assert decoder.feed(b"00.0MH\r") == [Command(0, "", ".0MH")]


# -- fuzzing ---------------------------------------------------------------------------------

_frames = st.one_of(
    st.builds(lambda a, s: Reply(a, s).to_bytes(), st.integers(0, 99), st.sampled_from("IWSPTUX")),
    st.builds(
        lambda a, s: Reply(a, s, safe=True).to_bytes(), st.integers(0, 99), st.sampled_from("IS")
    ),
)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_decode_reply_raises_only_frame_errors(data: bytes) -> None:
    error: FrameError | None = None
    try:
        consumed, frame = decode_reply(data)
    except FrameError as exc:
        error = exc
    if error is not None:
        assert 1 <= error.consumed <= len(data)
        return
    assert 0 <= consumed <= len(data)
    if frame is not None and frame.safe:
        payload = data[2 : consumed - 3]
        assert int.from_bytes(data[consumed - 3 : consumed - 1], "big") == crc16_xmodem(payload)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_decode_command_raises_only_frame_errors(data: bytes) -> None:
    error: FrameError | None = None
    try:
        consumed, _frame = decode_command(data)
    except FrameError as exc:
        error = exc
    if error is not None:
        assert 1 <= error.consumed <= len(data)
        return
    assert 0 <= consumed <= len(data)


@settings(max_examples=200)
@given(st.lists(st.one_of(_frames, st.binary(max_size=20)), max_size=12), st.integers(1, 16))
def test_fuzz_decoder_never_raises_and_returns_only_checked_frames(
    chunks: list[bytes], step: int
) -> None:
    wire = b"".join(chunks)
    decoder = ReplyDecoder()
    got: list[Reply] = []
    for i in range(0, len(wire), step):
        got += decoder.feed(wire[i : i + step])
    for reply in got:
        # every frame returned re-encodes to bytes present on the wire: never a corrupted one
        assert reply.to_bytes() in wire
    assert decoder.pending <= MAX_BUFFER


@settings(max_examples=300)
@given(
    st.integers(0, 99),
    st.sampled_from(["S", "I"]),
    st.sampled_from(["", "200.0MH", "I12.34W0.000ML", "?NA"]),
    st.integers(0, 10_000),
)
def test_fuzz_a_flipped_bit_in_a_safe_frame_is_never_returned(
    address: int, status: str, data: str, flip: int
) -> None:
    frame = Reply(address, status, data, safe=True).to_bytes()
    bit = flip % ((len(frame) - 3) * 8)  # any bit of the payload or the CRC
    corrupted = bytearray(frame)
    corrupted[2 + bit // 8] ^= 1 << (bit % 8)
    assert ReplyDecoder().feed(bytes(corrupted)) == []
