"""Bounds on what a caller sends during a call: DTMF digits per message and per call.

``WrappedTransport`` is a CallTransport that passes everything through to another; wrappers
override the member they change (``LimitedInput`` the inbound events, the call record's
``RecordingTransport`` the outbound ones).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from common.audio import Format
from common.errors import InvalidArgument
from gateway.session.events import CallerDtmf, CallTransport, InboundEvent, OutboundEvent

MAX_DTMF_PER_MESSAGE = 32
MAX_DTMF_PER_CALL = 1_000


class WrappedTransport:
    """A CallTransport that forwards every member to ``inner``."""

    def __init__(self, inner: CallTransport) -> None:
        self._inner = inner

    @property
    def caller_format(self) -> Format:
        """The inner transport's caller format."""
        return self._inner.caller_format

    def inbound(self) -> AsyncIterator[InboundEvent]:
        """The inner transport's inbound events."""
        return self._inner.inbound()

    def send_audio(self, frame: bytes) -> None:
        """Forwards ``frame``."""
        self._inner.send_audio(frame)

    def send_event(self, event: OutboundEvent) -> None:
        """Forwards ``event``."""
        self._inner.send_event(event)


class LimitedInput(WrappedTransport):
    """Ends the call with INVALID_ARGUMENT when DTMF exceeds its bounds (per message, per call)."""

    def __init__(
        self, inner: CallTransport, per_message: int = MAX_DTMF_PER_MESSAGE, per_call: int = MAX_DTMF_PER_CALL
    ) -> None:
        super().__init__(inner)
        self._per_message = per_message
        self._left = per_call
        self._per_call = per_call

    async def _bounded(self) -> AsyncIterator[InboundEvent]:
        async for event in self._inner.inbound():
            if isinstance(event, CallerDtmf):
                if len(event.digits) > self._per_message:
                    raise InvalidArgument(
                        f"dtmf has {len(event.digits)} digits in one message; at most {self._per_message}"
                    )
                self._left -= len(event.digits)
                if self._left < 0:
                    raise InvalidArgument(f"dtmf: at most {self._per_call} digits per call")
            yield event

    def inbound(self) -> AsyncIterator[InboundEvent]:
        """The inner events, DTMF checked against the bounds."""
        return self._bounded()


__all__ = ["MAX_DTMF_PER_CALL", "MAX_DTMF_PER_MESSAGE", "LimitedInput", "WrappedTransport"]
