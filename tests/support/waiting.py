"""Polling instead of sleeping: wait for a condition, not for a guess at how long it takes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str = "the condition", interval: float = 0.05,
    details: Callable[[], str] = lambda: "",
) -> T:  # fmt: skip
    """Call ``predicate`` until it returns something truthy and return that; an AssertionError
    naming ``what`` (and ``details()``, e.g. a log tail) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{details()}".rstrip())
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """:func:`wait_until` for code on the event loop: poll ``predicate`` between loop turns."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)
