"""The gateway as a LiveKit agent worker: room calls (SIP phones and WebRTC users) run the same
CallSession as Converse, through ``RoomTransport``."""

from gateway.livekit.calls import CallControls, CallServices, RoomCalls
from gateway.livekit.routing import Caller, CallRouter, Refused, Route
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings, MissingCredential
from gateway.livekit.sip_control import LiveKitSipControl, SipControl, TransferFailed
from gateway.livekit.transport import RoomTransport

__all__ = [
    "CallControls",
    "CallRouter",
    "CallServices",
    "Caller",
    "LiveKitCredentials",
    "LiveKitSettings",
    "LiveKitSipControl",
    "MissingCredential",
    "Refused",
    "RoomCalls",
    "RoomTransport",
    "Route",
    "SipControl",
    "TransferFailed",
]
