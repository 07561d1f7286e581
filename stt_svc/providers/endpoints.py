"""Balancing streams over several URLs of one provider (self-hosted GPU Deepgram instances).

The same rules as ``common.discovery.ChannelPool``, for websocket URLs instead of gRPC channels:
each new stream goes to the URL with the fewest streams in flight (ties round-robin), and a URL
that just failed gets no new streams for a while (``mark_failed``) unless every URL did.
``replace`` swaps the URL set (from Consul): a URL that left gets no new streams, and its
streams in flight run on and are released as usual.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence


class EndpointBalancer:
    """Owns the in-flight count and failure penalty of each URL."""

    def __init__(self, urls: Sequence[str], failure_penalty_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("at least one URL is needed")
        self.urls = tuple(urls)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._failed_until: dict[str, float] = {}
        self._penalty_s = failure_penalty_s
        self._rr = itertools.count()

    def acquire(self) -> str:
        """The URL for a new stream, counted in flight until ``release``."""
        now = time.monotonic()
        healthy = [u for u in self.urls if self._failed_until.get(u, 0.0) <= now] or list(self.urls)
        start = next(self._rr)
        n = len(healthy)
        url = min((healthy[(start + i) % n] for i in range(n)), key=self._in_flight.__getitem__)
        self._in_flight[url] += 1
        return url

    def release(self, url: str) -> None:
        self._in_flight[url] -= 1
        if url not in self.urls and not self._in_flight[url]:
            del self._in_flight[url]

    def replace(self, urls: Sequence[str]) -> None:
        """The new set of URLs (order kept, duplicates dropped); an empty set changes nothing."""
        fresh = tuple(dict.fromkeys(urls))
        if not fresh or fresh == self.urls:
            return
        self.urls = fresh
        for url in fresh:
            self._in_flight.setdefault(url, 0)
        for url in [u for u, n in self._in_flight.items() if u not in fresh and not n]:
            del self._in_flight[url]

    def mark_failed(self, url: str, seconds: float | None = None) -> None:
        """``url`` failed in a way that points at the instance: avoid it for ``seconds``."""
        until = time.monotonic() + (self._penalty_s if seconds is None else seconds)
        self._failed_until[url] = max(until, self._failed_until.get(url, 0.0))

    def in_flight(self) -> dict[str, int]:
        return dict(self._in_flight)

    def failed(self) -> list[str]:
        now = time.monotonic()
        return [u for u, until in self._failed_until.items() if until > now]
