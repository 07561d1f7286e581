"""The portal's "test this agent": a real call through the gateway's Converse, text in, audio out.

The caller's words are spoken by the local voice (``gateway.cli.place_call`` synthesizes them in
a worker thread, never on the loop) and sent in real time; the agent's reply comes back as audio,
a transcript and the per-turn latencies, and the call is recorded like any other. The portal
user's own credential is passed to the gateway unchanged, so the gateway's RBAC decides (the
``agent`` or ``admin`` role). At most ``MAX_CONCURRENT`` test calls run per front process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import wave
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tenant_svc.rest.errors import HTTP_STATUS, HttpError
from tenant_svc.rest.handler import error_response

MAX_CONCURRENT = 4
MAX_TEXT = 500
_AGENT_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def _wav(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def _parse(body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict) or set(data) - {"agent", "text"}:
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, 'send {"agent": "<agent id>", "text": "..."}')
    agent, text = data.get("agent"), data.get("text")
    if not isinstance(agent, str) or not _AGENT_ID.match(agent):
        raise HttpError(
            400, grpc.StatusCode.INVALID_ARGUMENT, "agent must be an agent id (lowercase, digits, hyphens)"
        )
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"text must be 1-{MAX_TEXT} characters")
    return agent, text.strip()


class TrialCalls:
    """Places test calls through the gateway at ``gateway_address`` (empty: test calls are off)."""

    def __init__(self, gateway_address: str) -> None:
        self.gateway_address = gateway_address
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def handle(self, request: Request) -> Response:
        """POST {agent, text} with Authorization and X-Tenant-Id -> transcript, latencies, WAV."""
        try:
            return JSONResponse(await self._answer(request))
        except HttpError as e:
            return error_response(e)

    async def _answer(self, request: Request) -> dict[str, Any]:
        if not self.gateway_address:
            raise HttpError(
                400,
                grpc.StatusCode.FAILED_PRECONDITION,
                "test calls are off on this front: set VOICEAI_REST_GATEWAY_ADDRESS to the gateway",
            )
        authorization = request.headers.get("authorization", "")
        tenant = request.headers.get("x-tenant-id", "")
        if not authorization:
            raise HttpError(401, grpc.StatusCode.UNAUTHENTICATED, "send your credential as Authorization")
        if not tenant:
            raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, "send the tenant id as X-Tenant-Id")
        agent, text = _parse(await request.body())
        if self._slots.locked():
            raise HttpError(
                429, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many test calls right now", {"Retry-After": "5"}
            )
        from gateway.cli import CallOptions, Utterance, place_call  # the caller side of Converse

        async with self._slots:
            report = await place_call(
                CallOptions(
                    gateway=self.gateway_address,
                    tenant=tenant,
                    agent=agent,
                    utterances=[Utterance(text)],
                    greeting_wait_s=2.0,
                    turn_timeout_s=20.0,
                    authorization=authorization,
                )
            )
        if report.status not in ("", "OK") and not report.transcript:  # refused before it began
            code = getattr(grpc.StatusCode, report.status, grpc.StatusCode.UNKNOWN)
            raise HttpError(HTTP_STATUS.get(code, 500), code, report.error or report.status)
        summary = report.summary()
        return {
            "callId": summary["call_id"],
            "ok": summary["ok"],
            "error": summary["error"],
            "endReason": summary["end_reason"],
            "transcript": [
                {
                    "speaker": e["speaker"],
                    "text": e["text"],
                    "turn": e["turn"],
                    "interrupted": e["interrupted"],
                }
                for e in summary["transcript"]
            ],
            "turns": [
                {k: v for k, v in t.items() if k.endswith("_ms") or k == "turn"} for t in summary["turns"]
            ],
            "audioWav": base64.b64encode(_wav(report.agent_audio, report.rate)).decode(),
        }
