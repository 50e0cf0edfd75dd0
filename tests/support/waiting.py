"""Polling instead of sleeping: wait for a condition, not for a guess at how long it takes."""

from __future__ import annotations

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
