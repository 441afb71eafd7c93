"""In-process token buckets: per web chat session, per IP, per login."""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    """``rate`` events per ``per`` seconds for each key, with bursts up to ``rate``."""

    def __init__(self, rate: int, per: float = 60.0, max_keys: int = 100_000) -> None:
        self.rate = float(rate)
        self.per = per
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, cost: float = 1.0, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.pop(key, (self.rate, now))
        tokens = min(self.rate, tokens + (now - stamp) * self.rate / self.per)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        tokens, _ = self._buckets.get(key, (self.rate, 0.0))
        missing = max(0.0, cost - tokens)
        return missing * self.per / self.rate
