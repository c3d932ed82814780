"""The rules core: pure functions and values (no I/O, no asyncio, no wall clock)."""
