"""stt_svc's chain when the provider it switched to fails while the audio is being replayed to it
(scripted in-process recognizers, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from common.providers import ProviderError
from stt_svc.chain import BYTES_PER_MS, ChainRecognizer
from stt_svc.providers.base import Final, RecognitionEvent, RecognitionOptions
from tests.unit.test_stt_chain import Scripted, final, run


class _Gone:
    """A stream whose connection died as it opened: audio is refused."""

    async def push_audio(self, pcm16: bytes) -> None:
        raise ProviderError("connection lost while replaying", kind="disconnect")

    async def finalize(self) -> None:
        pass

    async def end_input(self) -> None:
        pass

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        return
        yield

    async def aclose(self) -> None:
        pass


class FirstStreamGone:
    """A provider with two endpoints (``attempts``): the first stream it opens is already gone."""

    attempts = 2

    def __init__(self, then: Scripted) -> None:
        self.name = then.name
        self.then = then
        self.opened = 0

    async def open(self, options: RecognitionOptions) -> _Gone | Scripted:
        self.opened += 1
        return _Gone() if self.opened == 1 else await self.then.open(options)


async def test_a_provider_that_fails_during_the_replay_is_passed_over_too() -> None:
    dropped = Scripted("deepgram", [], ProviderError("dropped", kind="disconnect"))
    then = Scripted("local", [final("hello", 100, 400)])
    local = FirstStreamGone(then)
    chain = ChainRecognizer({"deepgram": dropped, "local": local}, ["deepgram", "local"])
    events = await run(chain)  # before the fix: the replay's error ended the stream
    assert [e.text for e in events if isinstance(e, Final)] == ["hello"]
    assert local.opened == 2
    assert sum(len(a) for a in then.audio) == 1000 * BYTES_PER_MS  # every byte replayed to it
