"""LiveKit SIP for tenant_svc: phone numbers mirrored as SIP trunks and dispatch rules, and
outbound calls (``voiceai.telephony.v1.TelephonyService``)."""

from tenant_svc.telephony.errors import LiveKitRefused, LiveKitUnavailable
from tenant_svc.telephony.provisioning import NumberBinding, ReconcileReport, SipProvisioner
from tenant_svc.telephony.settings import LiveKitSettings

__all__ = [
    "LiveKitRefused",
    "LiveKitSettings",
    "LiveKitUnavailable",
    "NumberBinding",
    "ReconcileReport",
    "SipProvisioner",
]
