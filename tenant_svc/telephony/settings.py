"""Where LiveKit is and how tenant_svc uses it: the shared ``common.livekit_settings`` class
(one ``LiveKitSettings`` for tenant_svc and the gateway's worker), re-exported here."""

from common.livekit_settings import CREDENTIAL_VARIABLES, LiveKitSettings

__all__ = ["CREDENTIAL_VARIABLES", "LiveKitSettings"]
