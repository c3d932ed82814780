"""The web side's lanes to the kernel are the sizes docs/architecture.md says (8 urgent, 16
other, 1 for the events' feed). httpx ignores a client's own `limits` once it is given a
transport, so these are read off the connection pools themselves: a lane that silently grew
to httpx's default of 100 let 200 requests at once reach the kernel."""

from __future__ import annotations

from pathlib import Path

from api.web import OTHER_CONNECTIONS, URGENT_CONNECTIONS, Kernel


async def test_each_lane_to_the_kernel_holds_the_connections_it_says() -> None:
    kernel = Kernel(Path("/nonexistent/kernel.sock"))
    try:
        pools = {
            name: lane._transport._pool._max_connections  # type: ignore[attr-defined]
            for name, lane in (
                ("urgent", kernel.urgent),
                ("other", kernel.other),
                ("feed", kernel.feed),
            )
        }
    finally:
        await kernel.aclose()
    assert pools == {"urgent": URGENT_CONNECTIONS, "other": OTHER_CONNECTIONS, "feed": 1}
    assert (URGENT_CONNECTIONS, OTHER_CONNECTIONS) == (8, 16)  # as architecture.md says
