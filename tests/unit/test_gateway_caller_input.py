"""CallerInput batches caller audio toward STT: small batches while the caller speaks or may
just have stopped, a flush on every voice edge, large batches in long silences."""

from __future__ import annotations

import numpy as np

from common.audio import LINEAR16, Format
from gateway.agents import Agent, TurnTakingProfile
from gateway.session.caller_input import QUIET_MARGIN_MS, CallerInput
from gateway.session.events import Usage

F16 = Format(LINEAR16, 16000)
FRAME = 640
VOICE = (6000 * np.sin(np.arange(320) / 3)).astype(np.int16).tobytes()
QUIET = b"\x00" * FRAME


class _Stt:
    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, audio: bytes) -> None:
        self.sent.append(len(audio) // FRAME)  # in frames


async def test_batches_follow_the_voice() -> None:
    agent = Agent("a", turn_taking=TurnTakingProfile(end_of_turn_silence_ms=500))  # endpointing 300 ms
    caller = CallerInput(F16, None, agent, Usage(), chunk_ms=100, quiet_chunk_ms=500)  # type: ignore[arg-type]
    stt = _Stt()
    caller._stt = stt  # type: ignore[assignment]  # the stream itself is not under test
    for _ in range(10):  # 200 ms of speech
        await caller.on_audio(VOICE)
    assert stt.sent == [1, 5]  # flushed on the voice edge, then a 100 ms batch
    stt.sent.clear()
    settled_frames = (300 + QUIET_MARGIN_MS) // 20
    for _ in range(settled_frames + 100):  # quiet: 600 ms settling, then 2 s of listening
        await caller.on_audio(QUIET)
    # Edge flush (4 speech frames + the first quiet one), 100 ms batches while the recognizer
    # may still be closing the utterance, then 500 ms batches.
    assert stt.sent[0] == 5
    assert stt.sent[1:6] == [5] * 5 and stt.sent[6] == 25
    assert stt.sent[-3:] == [25, 25, 25]
    assert sum(stt.sent) <= settled_frames + 101
    stt.sent.clear()
    await caller.on_audio(VOICE)
    assert stt.sent and stt.sent[0] >= 1  # speech flushes at once, whatever was batched
