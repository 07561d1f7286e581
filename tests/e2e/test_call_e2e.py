"""A whole call through the real mesh with the local engines: whisper hears the caller, the
offline responder answers per the demo agent's rules, Piper speaks, and the agent's audio is
transcribed back to check what the caller actually heard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from common.discovery import StaticResolver
from gateway.app import GatewayApp, Settings
from gateway.cli import CallOptions, Utterance, place_call
from gateway.session.history import HistoryEntry, InMemoryConversationStore
from llm_svc.app import Settings as LlmSettings
from llm_svc.app import build_host as llm_host
from stt_svc.app import Settings as SttSettings
from stt_svc.app import build_host as stt_host
from stt_svc.app import make_engine as stt_engine
from stt_svc.providers.base import RecognitionOptions
from tests.audio_helpers import normalise
from tests.conftest import running
from tests.credentials import bearer
from tts_svc.app import Settings as TtsSettings
from tts_svc.app import build_host as tts_host
from tts_svc.app import make_engine as tts_engine

pytestmark = pytest.mark.slow


class RecordingStore(InMemoryConversationStore):
    """Keeps a copy of every call's history after the call drops it."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, list[HistoryEntry]] = {}

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None:
        await super().append(tenant_id, call_id, entry)
        self.kept.setdefault(call_id, []).append(entry)


@contextlib.asynccontextmanager
async def real_mesh(store: RecordingStore) -> AsyncIterator[tuple[str, object]]:
    stt = stt_engine(SttSettings())
    stt.warm_up()  # type: ignore[attr-defined]
    tts = tts_engine(TtsSettings())
    tts.warm_up()  # type: ignore[attr-defined]
    async with (
        running(stt_host(SttSettings(), stt)) as stt_addr,
        running(llm_host(LlmSettings())) as llm_addr,
        running(tts_host(TtsSettings(), tts)) as tts_addr,
    ):
        resolver = StaticResolver({"stt": [stt_addr], "llm": [llm_addr], "tts": [tts_addr]})
        app = GatewayApp(Settings(grace_period_s=1.0), resolver, store=store)
        port = await app.start()
        try:
            yield f"127.0.0.1:{port}", stt
        finally:
            await app.drain(1.0)


async def test_three_turn_call_with_barge_in_through_the_real_mesh() -> None:
    store = RecordingStore()
    async with real_mesh(store) as (gateway, stt):
        report = await place_call(
            CallOptions(
                gateway=gateway,
                utterances=[
                    Utterance("Hi, I'd like to book a cleaning for next Tuesday."),
                    Utterance("Sorry, what are your opening hours?", barge_in_after_ms=1200),
                    Utterance("Great, thank you. Goodbye."),
                ],
                authorization=bearer("demo")[1],
            )
        )
        heard_back, _, _ = stt.transcribe(report.agent_audio, RecognitionOptions(), False)  # type: ignore[attr-defined]

    assert report.ok, report.error or report.end_message
    callers = [t.text for t in report.transcript if t.speaker == "caller"]
    agent = " ".join(t.text for t in report.transcript if t.speaker == "agent")
    # The caller's words were transcribed.
    assert {"book", "cleaning", "tuesday"} <= set(normalise(callers[0]))
    assert {"opening", "hours"} <= set(normalise(" ".join(callers)))
    assert {"thank", "goodbye"} <= set(normalise(callers[-1])) or "bye" in normalise(callers[-1])
    # The agent replied per the demo agent's rules (greeting, booking, hours, goodbye).
    assert "Bright Smile Dental" in agent
    assert "We are open Monday to Friday" in agent
    assert "Goodbye!" in agent
    # What the agent said, transcribed back from its audio, matches its text.
    spoken = set(normalise(heard_back))
    assert {"bright", "smile", "dental", "monday", "friday", "saturday", "goodbye"} <= spoken
    # The barge-in cut the agent off; the history holds only what was heard, marked interrupted.
    assert report.clears >= 1
    assert report.turns[0].interrupted is True
    history = store.kept[report.call_id]
    cut = [e for e in history if e.role == "assistant" and e.interrupted]
    assert cut, history
    full_booking = "Sure, I can help with that. We have an opening next Tuesday at ten in the morning. Would that work for you?"
    assert cut[0].text and len(cut[0].text) < len(full_booking)
    assert full_booking.startswith(cut[0].text.split(".")[0])
    assert [e.role for e in history][:2] == ["assistant", "user"]  # greeting, then the caller
    timed = [t for t in report.turns if not t.interrupted]
    assert timed and all(0 <= t.stt_final_ms <= t.first_audio_out_ms for t in timed)
