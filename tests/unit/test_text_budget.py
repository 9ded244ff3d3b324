"""The gate that holds a stream's reader back while its text runs too far ahead."""

from __future__ import annotations

import asyncio

from chorus.server.text_budget import TextBudget


async def _waits(budget: TextBudget) -> bool:
    try:
        await asyncio.wait_for(budget.room(), 0.05)
    except TimeoutError:
        return True
    return False


async def test_the_gate_closes_at_the_limit_and_opens_below_it() -> None:
    budget = TextBudget(10)
    budget.hold(9)
    assert not await _waits(budget)
    budget.hold(1)
    assert await _waits(budget)
    budget.free(1)
    assert not await _waits(budget)


async def test_released_it_never_waits_again() -> None:
    """Once the consumer is gone nothing will be freed, so waiting would be for good."""
    budget = TextBudget(5)
    budget.hold(5)
    assert await _waits(budget)
    budget.release()
    assert not await _waits(budget)
    budget.hold(100)
    assert not await _waits(budget)
