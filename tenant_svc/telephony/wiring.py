"""tenant_svc's LiveKit side, built once at start when the credentials are set."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from livekit import api

from tenant_svc.repository import Repository
from tenant_svc.telephony.outbound import OutboundDialer
from tenant_svc.telephony.provisioning import SipProvisioner
from tenant_svc.telephony.reconciler import SipReconciler
from tenant_svc.telephony.settings import LiveKitSettings

log = logging.getLogger(__name__)


@dataclass
class Telephony:
    """The LiveKit API client and what uses it; closed with the service."""

    client: api.LiveKitAPI
    provisioner: SipProvisioner
    dialer: OutboundDialer
    reconciler: SipReconciler

    async def aclose(self) -> None:
        await self.reconciler.stop()
        await self.client.aclose()


def build_telephony(repo: Repository, settings: LiveKitSettings) -> Telephony | None:
    """The telephony side when LiveKit is configured, else None."""
    if not settings.enabled:
        log.info(
            "LiveKit SIP provisioning and outbound calls are off: %s not set", ", ".join(settings.missing())
        )
        return None
    client = api.LiveKitAPI(
        settings.url,
        settings.api_key,
        settings.api_secret.get_secret_value(),
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout_s),
    )
    provisioner = SipProvisioner(client, settings)
    reconciler = SipReconciler(repo, provisioner, settings.reconcile_interval_s)
    log.info(
        "LiveKit SIP provisioning on: %s, agent %r, tag %r", settings.url, settings.agent_name, settings.tag
    )
    return Telephony(client, provisioner, OutboundDialer(client, settings), reconciler)
