"""Command lines of ``voiceai call`` and ``python -m gateway.mesh``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway import mesh
from gateway.cli import main, options_from_args, parse_args
from gateway.wav import write_pcm16


def test_defaults_call_the_local_demo_agent() -> None:
    args = parse_args(["call", "--say", "hello"])
    o = options_from_args(args)
    assert (o.gateway, o.tenant, o.agent, o.encoding, o.rate) == (
        "127.0.0.1:50060",
        "demo",
        "demo",
        "linear16",
        16000,
    )
    assert o.pause_ms == 600 and not args.json and args.out == ""
    assert [(u.text, u.barge_in_after_ms) for u in o.utterances] == [("hello", None)]


def test_say_and_wav_are_spoken_in_command_line_order(tmp_path: Path) -> None:
    pcm = (np.ones(8000) * 1000).astype("<i2").tobytes()  # 1 s at 8 kHz
    wav = write_pcm16(tmp_path / "one.wav", pcm, 8000)
    args = parse_args(["call", "--say", "first", "--wav", str(wav), "--say", "third", "--rate", "48000"])
    o = options_from_args(args)
    assert [u.text for u in o.utterances] == ["first", "", "third"]
    assert abs(len(o.utterances[1].pcm) // 2 - 48000) <= 2  # read and converted to the call rate


def test_phone_audio_is_mulaw_at_8khz() -> None:
    assert parse_args(["call", "--format", "mulaw"]).rate == 8000
    assert parse_args(["call", "--format", "mulaw", "--rate", "8000"]).rate == 8000
    with pytest.raises(SystemExit):
        parse_args(["call", "--format", "mulaw", "--rate", "16000"])
    with pytest.raises(SystemExit):
        parse_args(["call", "--rate", "44100"])


def test_barge_in_applies_to_every_later_utterance() -> None:
    args = parse_args(["call", "--say", "a", "--say", "b", "--barge-in-after-ms", "800", "--pause-ms", "300"])
    o = options_from_args(args)
    assert [u.barge_in_after_ms for u in o.utterances] == [800, 800]
    assert o.pause_ms == 300
    with pytest.raises(SystemExit):
        parse_args(["call", "--pause-ms", "-5"])


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        parse_args([])


def test_an_unreadable_wav_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--wav", str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav: no such file" in capsys.readouterr().err


def test_mesh_ports_follow_the_base_port_unless_overridden() -> None:
    assert mesh.ports_from_args(mesh.parse_args([])) == {
        "stt": 50061,
        "llm": 50062,
        "tts": 50063,
        "tenant": 50064,
        "gateway": 50060,
    }
    ports = mesh.ports_from_args(mesh.parse_args(["--base-port", "6000", "--tts-port", "7000"]))
    assert ports == {"stt": 6001, "llm": 6002, "tts": 7000, "tenant": 6004, "gateway": 6000}
    args = mesh.parse_args(["--demo"])
    assert args.demo and args.out_dir == "var" and args.grace_s == 5.0
    assert not mesh.parse_args([]).demo
