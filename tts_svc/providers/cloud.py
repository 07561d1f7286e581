"""What the cloud TTS adapters share: deadlines, error translation, PCM framing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.providers import ProviderError, ProviderKey, retry_after_s


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Every provider call is bounded: a stuck provider becomes ProviderError(kind="timeout")."""

    connect_s: float = 3.0  # TCP + TLS + HTTP/websocket handshake
    # Text sent -> first audio of the piece (HTTP providers: from the request, connection setup
    # included when the pool has none open).
    first_audio_s: float = 3.0
    idle_s: float = 3.0  # between two chunks of one piece
    close_s: float = 1.0  # polite close (Clear/Close) before the connection is dropped


def status_error(
    provider: str, status: int, headers: Mapping[str, str] | None, key: ProviderKey | None
) -> ProviderError:
    """A provider's HTTP status (a refused request or websocket handshake) as a ProviderError.

    Messages name the key by label only. All of these let the chain fall through: a refused
    key or a provider outage is not something the caller can fix in its request.
    """
    label = key.label if key else "no"
    if status == 429:
        wait = retry_after_s(headers)
        hint = f"; it asks to retry after {wait:g} s" if wait is not None else ""
        return ProviderError(
            f"{provider} is rate limiting the {label} key (HTTP 429){hint}",
            kind="rate_limited",
            retry_after_s=wait,
        )
    if status in (401, 403):
        return ProviderError(
            f"{provider} refused the {label} key (HTTP {status}); check the key in the environment",
            kind="auth",
        )
    if status >= 500:
        return ProviderError(
            f"{provider} failed (HTTP {status})", kind="server_error", retry_after_s=retry_after_s(headers)
        )
    return ProviderError(f"{provider} refused the request (HTTP {status})", kind="rejected")


class EvenBytes:
    """Re-frames a byte stream into whole PCM16 samples (HTTP chunking may split a sample)."""

    __slots__ = ("_odd",)

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        if self._odd:
            data, self._odd = self._odd + data, b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        return data
