"""The ``voiceai`` command line: arguments in, a call placed, the report out."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from common.tls import edge_client_tls
from gateway.cli.caller import DEFAULT_GATEWAY, CallOptions, Utterance, place_call
from gateway.cli.credentials import HOW_TO, authorization_for
from gateway.cli.report import format_report
from gateway.wav import WavError, read_pcm16, write_pcm16

USAGE = """\
    voiceai call --say "Hi, I'd like to book a cleaning." --say "Thanks, bye." --out agent.wav

voiceai call speaks caller utterances (text spoken by the local Piper voice, or WAV files)
into Converse in 20 ms frames on a real-time clock, fills the pauses with silence as a phone
line does, waits for each reply to finish, then hangs up. It prints the conversation and a
per-turn latency table and writes the agent's audio to a WAV. The exit code is 0 only for a
call that ended with the caller's hang-up; a failed call prints its gRPC status and message.

The call carries VOICEAI_TOKEN or VOICEAI_API_KEY as its credential; on a local mesh in dev
mode, neither is needed (a dev token for --tenant is minted with the mesh's dev key).
"""


class _AppendUtterance(argparse.Action):
    """--say and --wav share one list so the caller speaks them in command-line order."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The ``voiceai call`` arguments."""
    parser = argparse.ArgumentParser(
        prog="voiceai", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("call", help="place a call through the gateway")
    c.add_argument("--gateway", default=DEFAULT_GATEWAY, help="host:port (default %(default)s)")
    c.add_argument("--tenant", default="demo", help="x-tenant-id (default %(default)s)")
    c.add_argument("--agent", default="demo", help="agent id (default %(default)s)")
    say = "caller utterance: TEXT spoken by the local voice (repeatable)"
    c.add_argument("--say", dest="utterances", action=_AppendUtterance, const="say", metavar="TEXT", help=say)
    wav = "caller utterance from a WAV file, any rate (repeatable; order with --say is kept)"
    c.add_argument("--wav", dest="utterances", action=_AppendUtterance, const="wav", metavar="FILE", help=wav)
    c.add_argument(
        "--format", choices=("linear16", "mulaw"), default="linear16", help="caller audio encoding"
    )
    c.add_argument(
        "--rate",
        type=int,
        default=None,
        choices=(8000, 16000, 48000),
        help="Hz (default 16000; 8000 with mulaw)",
    )
    c.add_argument("--out", default="", metavar="WAV", help="write the agent's audio here")
    c.add_argument("--pause-ms", type=int, default=600, help="silence after each reply (default %(default)s)")
    c.add_argument(
        "--barge-in-after-ms",
        type=int,
        default=None,
        metavar="N",
        help="start each later utterance N ms into the agent's reply (talk over it)",
    )
    c.add_argument("--turn-timeout-s", type=float, default=30.0, help="longest wait for one reply")
    c.add_argument("--json", action="store_true", help="print a machine-readable summary instead")
    args = parser.parse_args(argv)
    args.utterances = args.utterances or []
    if args.rate is None:
        args.rate = 8000 if args.format == "mulaw" else 16000
    if args.format == "mulaw" and args.rate != 8000:
        parser.error("--format mulaw is telephone audio: it needs --rate 8000")
    if args.pause_ms < 0 or (args.barge_in_after_ms is not None and args.barge_in_after_ms < 0):
        parser.error("--pause-ms and --barge-in-after-ms must be >= 0")
    if args.turn_timeout_s <= 0:
        parser.error("--turn-timeout-s must be > 0")
    return args


def options_from_args(args: argparse.Namespace) -> CallOptions:
    """CallOptions for parsed ``voiceai call`` arguments (WAV files are read here)."""
    utterances = [
        Utterance(text=value, barge_in_after_ms=args.barge_in_after_ms)
        if kind == "say"
        else Utterance(pcm=read_pcm16(value, args.rate), barge_in_after_ms=args.barge_in_after_ms)
        for kind, value in args.utterances
    ]
    return CallOptions(
        gateway=args.gateway,
        tenant=args.tenant,
        agent=args.agent,
        encoding=args.format,
        rate=args.rate,
        utterances=utterances,
        pause_ms=args.pause_ms,
        turn_timeout_s=args.turn_timeout_s,
        authorization=authorization_for(args.tenant),
        tls=edge_client_tls(),
    )


def main(argv: list[str] | None = None) -> int:
    """``voiceai call``: place a call and print its report; returns the exit status."""
    args = parse_args(argv)
    try:
        options = options_from_args(args)
    except (WavError, ValueError) as e:  # ValueError: the TLS settings (named in the message)
        print(f"voiceai: {e}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(place_call(options))
    except KeyboardInterrupt:
        print("voiceai: interrupted", file=sys.stderr)
        return 130
    if args.out:
        write_pcm16(args.out, report.agent_audio, report.rate)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        print(format_report(report))
        if args.out:
            print(f"  agent audio: {args.out} ({len(report.agent_audio) / 2 / report.rate:.1f} s)")
    if report.status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        print(f"voiceai: the gateway refused the credential: {HOW_TO}", file=sys.stderr)
    return 0 if report.ok else 1
