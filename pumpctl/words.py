"""What the staff are told, word for word, wherever the service says it: the kernel's answer
to a reaction and the nurse station page (served by the web side, which never imports the
controller: docs/architecture.md, "Two processes")."""

from __future__ import annotations

__all__ = ["A3_WORDS"]

#: What the staff are told when a stop is not confirmed (A3; interfaces.md, section 3).
A3_WORDS = "Pump did not stop: clamp the line"
