"""``python -m tts_svc``: the voice is loaded and warmed up before SERVING; SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.healthcheck import wait_serving
from tests.conftest import tts_md as md

pytestmark = pytest.mark.slow
R = tts_pb2.StreamingSynthesizeRequest
ROOT = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serves_after_warm_up_and_drains_an_open_stream_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "tts.log"
    env = {**os.environ, "PYTHONPATH": ROOT, "VOICEAI_LOG_LEVEL": "INFO", "VOICEAI_GRACE_PERIOD_S": "20"}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tts_svc", "--port", str(port), env=env, cwd=ROOT, stdout=log, stderr=log
        )
    try:
        await asyncio.to_thread(wait_serving, f"127.0.0.1:{port}", 90.0, lambda: proc.returncode is None)
        lines = log_path.read_text().splitlines()
        warmed = next(i for i, line in enumerate(lines) if "loaded and warmed up" in line)
        serving = next(i for i, line in enumerate(lines) if "serving TextToSpeechService" in line)
        assert warmed < serving

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_MULAW, sample_rate_hertz=8000)
            await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt)))
            await call.write(R(text="Hello. "))
            first = await call.read()
            assert first.audio.text == "Hello."
            proc.send_signal(signal.SIGTERM)  # the open stream may finish; the process waits for it
            await asyncio.sleep(0.3)
            assert proc.returncode is None
            await call.write(R(text="I am still speaking while the service drains."))
            await call.done_writing()
            rest = []
            while (r := await call.read()) != grpc.aio.EOF:
                rest.append(r)
            assert [r.audio.text for r in rest if r.audio.text] == [
                "I am still speaking while the service drains."
            ]
            assert rest[-1].flush_done.characters == len(
                "Hello. I am still speaking while the service drains."
            )
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
