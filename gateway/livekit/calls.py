"""One LiveKit room call on the gateway's event loop: route the caller, run the same CallSession
Converse runs, record the call, hang up.

Everything here sees the room only through ``RoomTransport`` (audio and events) and
``SipControl`` (transfer, hangup), so the whole call is tested without a LiveKit server.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from functools import partial

import grpc.aio
from prometheus_client import Counter, Gauge

from common import context
from common.audio import FrameSlicer
from common.auth import AGENT, InternalTokenIssuer, Principal
from common.errors import ResourceExhausted, VoiceAIError
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.quotas import Lease
from common.tasks import cancel_and_wait
from gateway.agents import Agent
from gateway.call_runner import CallCore, CallRunner
from gateway.call_trace import room_attributes
from gateway.livekit.routing import REFUSED, Caller, CallRouter, Refused, Route
from gateway.livekit.settings import LiveKitSettings
from gateway.livekit.sip_control import SipControl, TransferFailed
from gateway.livekit.transport import RoomTransport
from gateway.session.call import CallSession
from gateway.session.events import CallEnded, EndReason
from gateway.session.services import describe_rpc_error
from gateway.usage_quota import CallBudget

log = logging.getLogger(__name__)

ACTIVE_CALLS = Gauge("voiceai_livekit_active_calls", "LiveKit room calls in progress on this worker")
CALLS = Counter("voiceai_livekit_calls_total", "LiveKit room calls ended", ["reason"])
TRANSFERS = Counter("voiceai_livekit_transfers_total", "Transfers of SIP callers to a human", ["result"])
REFUSAL_VOICE = Agent(agent_id="voiceai-system")  # the default voice, for callers no agent answers
REFUSAL_TIMEOUT_S = 15.0
PHRASE_TIMEOUT_S = 15.0  # a transfer phrase: synthesis and playout
# How long a call whose caller left mid-transfer waits for LiveKit's answer to know why it ended.
TRANSFER_ANSWER_TIMEOUT_S = 5.0
DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class CallServices:
    """What every room call on this process shares with the Converse calls."""

    core: CallCore
    router: CallRouter
    issuer: InternalTokenIssuer
    sip: SipControl


class CallControls:
    """The caller's keypad during a call: the transfer digit asks for a human when the agent has
    a transfer number (SIP callers only); every other digit goes to the CallSession.

    A transfer is announced first (``transfer_phrase``, through the session's playout, played
    out in the room), then asked of LiveKit; it ends the call as TRANSFERRED. A failed one is
    counted and logged, the caller hears ``transfer_failed_phrase``, and the call goes on."""

    def __init__(
        self, transport: RoomTransport, sip: SipControl, room: str, caller: Caller, settings: LiveKitSettings
    ) -> None:
        self._transport = transport
        self._sip = sip
        self._room = room
        self._caller = caller
        self._settings = settings
        self.agent: Agent | None = None  # set once the call is routed
        self.session: CallSession | None = None  # set by ``attach`` once it runs
        self._context: contextvars.Context | None = None
        self.transfer: asyncio.Task[None] | None = None
        self.transferred = False
        self._asking = False  # a TransferSIPParticipant request is in flight

    def dtmf(self, digit: str) -> None:
        agent = self.agent
        if (
            agent is not None
            and agent.transfer_number
            and self._caller.sip
            and digit == self._settings.transfer_digit
            and self.transfer is None
        ):
            self.transfer = asyncio.get_running_loop().create_task(
                self._transfer(agent.transfer_number),
                name=f"transfer:{self._room[:16]}",
                context=self._context,  # the call's (tenant, call id, token), not the room event's
            )
            return
        if digit in DTMF_DIGITS:  # the session refuses anything else as invalid input
            self._transport.caller_dtmf(digit)

    def attach(self, session: CallSession) -> None:
        """The call's session; called in the call's task, whose request context it keeps."""
        self.session = session
        self._context = contextvars.copy_context()

    async def _say(self, text: str) -> None:
        """``text`` through the session, until the caller has heard it in the room."""
        if self.session is None or not text:
            return
        try:
            async with asyncio.timeout(PHRASE_TIMEOUT_S):
                await self.session.say(text)
                self._transport.finish_speech()
                await self._transport.wait_played()
        except TimeoutError:
            log.warning("the phrase %r did not play out in %.0f s; going on", text, PHRASE_TIMEOUT_S)

    async def _transfer(self, number: str) -> None:
        log.info("transferring the caller to a human")
        await self._say(self._settings.transfer_phrase)
        self._asking = True
        try:
            await self._sip.transfer(self._room, self._caller.identity, number)
        except TransferFailed as e:
            self._asking = False
            TRANSFERS.labels("failed").inc()
            log.warning("transfer failed: %s", e)
            await self._say(self._settings.transfer_failed_phrase)
            self.transfer = None  # the caller may press again; the agent goes on meanwhile
            return
        finally:
            self._asking = False
        TRANSFERS.labels("ok").inc()
        self.transferred = True
        # LiveKit SIP takes the caller out of the room; the agent has nobody to talk to.
        if self.session is not None:
            self.session.end(EndReason.TRANSFERRED, "the caller was transferred to a human")

    async def outcome(self, ended: CallEnded) -> CallEnded:
        """Why the call ended, counting a transfer: LiveKit SIP takes a transferred caller out of
        the room, which may reach the session (as a hangup) before the transfer's answer does."""
        if ended.reason is EndReason.CALLER_HANGUP and self._asking and self.transfer is not None:
            await asyncio.wait({self.transfer}, timeout=TRANSFER_ANSWER_TIMEOUT_S)
        if self.transferred and ended.reason is EndReason.CALLER_HANGUP:
            return dataclasses.replace(
                ended, reason=EndReason.TRANSFERRED, message="the caller was transferred to a human"
            )
        return ended


class RoomCalls:
    """Runs room calls on the gateway's loop and counts them (the worker's load)."""

    def __init__(self, services: CallServices, settings: LiveKitSettings) -> None:
        self._services = services
        self._runner = CallRunner(services.core)
        self._settings = settings
        self.active = 0

    async def run(self, room: str, caller: Caller, transport: RoomTransport, controls: CallControls) -> str:
        """The call in ``room`` with ``caller``, start to hangup; returns why it ended."""
        call_id = uuid.uuid4().hex
        self.active += 1
        ACTIVE_CALLS.inc()
        playback = asyncio.get_running_loop().create_task(
            transport.run_playback(), name=f"playback:{call_id[:8]}"
        )
        reason = "error"
        try:
            try:
                route = await self._services.router.route(caller, call_id)
                lease, budget = await self._admit(route, call_id)
            except Refused as refused:
                log.info("refusing the caller in room %s: %s", room, refused.message)
                reason = f"refused_{refused.reason}"
                await self._say_refusal(transport, call_id)
                return reason
            controls.agent = route.agent
            ingress, trace_ids = room_attributes(room, caller.sip, caller.attributes)  # for its trace
            reason = await self._converse(
                route, transport, controls, call_id, lease, budget, (ingress, trace_ids)
            )
            return reason
        finally:
            self.active -= 1
            ACTIVE_CALLS.dec()
            CALLS.labels(reason).inc()
            await cancel_and_wait(playback, controls.transfer)
            # A hangup, max duration or failure: close the room, so a SIP caller's line drops.
            await self._services.sip.hang_up(room)

    async def _admit(self, route: Route, call_id: str) -> tuple[Lease | None, CallBudget | None]:
        try:
            budget = await self._runner.usage_budget(route.tenant_id)  # monthly usage quotas
            return await self._runner.admit(route.tenant_id, call_id), budget
        except ResourceExhausted as e:
            REFUSED.labels("over_quota").inc()
            raise Refused("over_quota", e.message) from None

    async def _converse(
        self,
        route: Route,
        transport: RoomTransport,
        controls: CallControls,
        call_id: str,
        lease: Lease | None,
        budget: CallBudget | None = None,
        trace: tuple[str, dict[str, str]] = ("livekit", {}),
    ) -> str:
        direction = pb.CALL_DIRECTION_OUTBOUND if route.outbound else pb.CALL_DIRECTION_INBOUND
        async with self._runner.call(
            tenant_id=route.tenant_id,
            call_id=call_id,
            agent=route.agent,
            transport=transport,
            lease=lease,
            record_agent_id=route.agent.agent_id,
            direction=direction,
            usage_budget=budget,
            numbers=(route.from_number, route.to_number),
            ingress=trace[0],
            trace_attributes=trace[1],
        ) as running:
            session = running.session
            controls.attach(session)
            try:
                running.ended = await controls.outcome(await session.run())
            except VoiceAIError as e:
                log.info("call failed: %s: %s", e.code.name, e.message)
            except asyncio.CancelledError:
                # The worker's drain ran out of time (or LiveKit ended the job): a shutdown.
                running.ended = CallEnded(
                    EndReason.SHUTDOWN, "the worker shut down", session.usage, session.turn
                )
                raise
        ended = running.ended
        log.info(
            "call ended: %s (%s), %d turns",
            ended.reason.name if ended else "ERROR",
            ended.message if ended else "",
            session.turn,
        )
        return ended.reason.name.lower() if ended else "error"

    async def _say_refusal(self, transport: RoomTransport, call_id: str) -> None:
        """The refusal message in the default voice, synthesized as the platform's own tenant."""
        s = self._services
        core = s.core
        tenant = self._settings.system_tenant
        principal = Principal("voiceai-livekit-worker", tenant, frozenset({AGENT}), "internal")
        context.bind(
            context.RequestContext(
                tenant, call_id, forward_authorization=partial(s.issuer.authorization_for, principal)
            )
        )
        text = self._settings.unknown_number_message
        try:
            async with asyncio.timeout(REFUSAL_TIMEOUT_S):
                pieces = await core.phrases.warm(core.clients, REFUSAL_VOICE, transport.caller_format, text)
                slicer = FrameSlicer(transport.caller_format.bytes_for_ms(20))
                for _text, audio in pieces:
                    for frame in slicer.push(audio):
                        transport.send_audio(frame)
                last = slicer.flush(b"\x00")
                if last is not None:
                    transport.send_audio(last)
                transport.finish_speech()
                await transport.wait_played()
        except TimeoutError:
            log.warning("the refusal message did not finish in %.0f s; hanging up", REFUSAL_TIMEOUT_S)
        except VoiceAIError as e:
            log.warning("could not say the refusal message: %s", e.message)
        except grpc.aio.AioRpcError as e:  # hang up anyway, silent rather than stuck
            log.warning("could not say the refusal message: %s", describe_rpc_error("tts", e))
