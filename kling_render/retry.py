"""The one retry policy: capped exponential backoff with full jitter, honouring Retry-After.

Only failures that are safe to repeat are retried: by default TransientError (which
includes SubmitRefusedError). A server's ``Retry-After`` reaches the policy as
``TransientError.retry_after`` (seconds; see :func:`parse_retry_after`) and is never
undercut: when the wait it asks for does not fit in the time budget, the last error
is raised instead of retrying early.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

from kling_render.errors import TransientError

__all__ = ["RetryPolicy", "parse_retry_after"]

T = TypeVar("T")
log = logging.getLogger(__name__)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad.

    ``now`` is the wall clock (epoch seconds) an HTTP date is measured against.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry, with sleep, clock and randomness injectable for tests.

    ``attempts`` counts calls (1 = no retry); ``max_total`` bounds the time spent
    waiting between them, in seconds of ``clock``.
    """

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total: float = 180.0
    retry_on: tuple[type[BaseException], ...] = (TransientError,)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base·2^(n-1))]."""
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** max(0, attempt - 1)))
        return self.rng.uniform(0.0, ceiling)

    def delay_for(self, attempt: int, exc: BaseException) -> float:
        """The wait before retry ``attempt`` after ``exc``: the server's Retry-After when it gave one."""
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after >= 0:
            return float(retry_after)
        return self.backoff(attempt)

    async def call(self, fn: Callable[[], Awaitable[T]], *, what: str = "request") -> T:
        """Await ``fn()`` until it succeeds, retrying ``retry_on`` errors; re-raise the last one."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except self.retry_on as exc:
                if attempt >= self.attempts:
                    raise
                delay = self.delay_for(attempt, exc)
                if self.clock() - started + delay > self.max_total:
                    raise
                log.info("%s failed (%s); retry %d/%d in %.1fs", what, exc, attempt, self.attempts - 1, delay)
                await self.sleep(delay)
