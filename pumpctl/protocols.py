"""Finding and reading protocol files (the I/O half; validation is in pumpctl.core.protocol)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pumpctl.core.protocol import Protocol, ProtocolError, parse_protocol

__all__ = ["DEFAULT_PROTOCOL", "available_protocols", "load_protocol", "load_protocol_file"]

DEFAULT_PROTOCOL = "daratumumab"


def load_protocol_file(path: Path) -> Protocol:
    """Load and validate a protocol from a file path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    protocol = parse_protocol(text, str(path))
    if protocol.name != path.stem:
        raise ProtocolError(f"{path}: name: {protocol.name!r} must match the file name")
    return protocol


def _shipped() -> resources.abc.Traversable:
    return resources.files("config") / "protocols"


def available_protocols() -> list[str]:
    """Names of the protocols shipped in `config/protocols`."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in _shipped().iterdir()
        if entry.name.endswith(".toml")
    )


def load_protocol(name_or_path: str = DEFAULT_PROTOCOL) -> Protocol:
    """Load a shipped protocol by name, or a protocol file by path (with a `/` or `.toml`)."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        return load_protocol_file(Path(name_or_path))
    entry = _shipped() / f"{name_or_path}.toml"
    if not entry.is_file():
        known = ", ".join(available_protocols())
        raise ProtocolError(f"protocol {name_or_path!r}: unknown (shipped: {known})")
    protocol = parse_protocol(entry.read_text(encoding="utf-8"), f"config/protocols/{entry.name}")
    if protocol.name != name_or_path:
        raise ProtocolError(f"config/protocols/{entry.name}: name must match the file name")
    return protocol
