"""``voiceai``: place a real call through the mesh from the command line.

``place_call(CallOptions) -> CallReport`` is the reusable part (``python -m gateway.mesh
--demo`` and the end-to-end tests use it); ``main`` is the ``voiceai`` command.
"""

from gateway.cli.caller import DEFAULT_GATEWAY, CallOptions, Utterance, place_call, speak_text
from gateway.cli.clock import FRAME_MS, FrameClock
from gateway.cli.command import main, options_from_args, parse_args
from gateway.cli.report import CallReport, TranscriptEntry, TurnTiming, format_report

__all__ = [
    "DEFAULT_GATEWAY",
    "FRAME_MS",
    "CallOptions",
    "CallReport",
    "FrameClock",
    "TranscriptEntry",
    "TurnTiming",
    "Utterance",
    "format_report",
    "main",
    "options_from_args",
    "parse_args",
    "place_call",
    "speak_text",
]
