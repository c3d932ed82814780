"""Turns per key (api/turns.py `KeyedTurns`, issue 18), the one helper behind the web side's
per-address limits: at most `size` holders of a key at once, other keys never behind them; a
wait past its bound is `NoTurn`, never raised for a fault of the block; a turn ended early is
ended once; a key nobody holds or awaits is forgotten (a flood of addresses leaves nothing)."""

from __future__ import annotations

import asyncio

import pytest

from api.turns import KeyedTurns, NoTurn


async def _hold(turns: KeyedTurns, key: str, go: asyncio.Event, holding: list[str]) -> None:
    async with turns.turn(key):
        holding.append(key)
        await go.wait()
        holding.remove(key)


async def test_at_most_size_holders_per_key_and_other_keys_pass() -> None:
    turns = KeyedTurns(2, wait_s=5.0)
    go, holding = asyncio.Event(), []
    tasks = [asyncio.create_task(_hold(turns, "10.0.0.66", go, holding)) for _ in range(5)]
    other = asyncio.create_task(_hold(turns, "10.0.0.7", go, holding))
    for _ in range(5):
        await asyncio.sleep(0)  # every task takes its first steps
    assert sorted(holding) == ["10.0.0.66", "10.0.0.66", "10.0.0.7"]
    go.set()
    await asyncio.gather(*tasks, other)
    assert len(turns) == 0  # nothing kept for addresses that left


async def test_a_wait_past_its_bound_is_no_turn_and_leaves_nothing() -> None:
    turns = KeyedTurns(1, wait_s=0.05)
    go, holding = asyncio.Event(), []
    holder = asyncio.create_task(_hold(turns, "a", go, holding))
    await asyncio.sleep(0)
    with pytest.raises(NoTurn):
        async with turns.turn("a"):
            pytest.fail("a second turn of a key of size 1")
    go.set()
    await holder
    assert len(turns) == 0


async def test_a_fault_of_the_block_is_its_own_and_the_turn_is_given_back() -> None:
    turns = KeyedTurns(1, wait_s=0.05)
    with pytest.raises(TimeoutError):  # the block's own timeout: not a missing turn
        async with turns.turn("a"):
            raise TimeoutError
    async with turns.turn("a"):  # given back: the next one gets it at once
        pass
    assert len(turns) == 0


async def test_a_turn_ended_early_is_ended_once() -> None:
    turns = KeyedTurns(1, wait_s=0.05)
    async with turns.turn("a") as release:
        release()
        release()
        async with turns.turn("a") as again:  # the turn is free once ended early
            again()
    async with turns.turn("a"):  # and still one turn, not two
        with pytest.raises(NoTurn):
            async with turns.turn("a"):
                pass
