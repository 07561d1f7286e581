"""LiveKit worker settings: the shared ``common.livekit_settings`` classes, re-exported here for
the worker's modules (one ``LiveKitSettings`` for the worker and tenant_svc)."""

from common.livekit_settings import LiveKitCredentials, LiveKitSettings, MissingCredential

__all__ = ["LiveKitCredentials", "LiveKitSettings", "MissingCredential"]
