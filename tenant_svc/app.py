"""tenant_svc settings and host factory: PostgreSQL pool, credentials, RBAC, change fan-out."""

from __future__ import annotations

import logging

from common.auth import AuthSettings, build_auth
from common.config_cache import ConfigCache
from common.crypto import KekSettings, TenantKeyring, build_key_provider
from common.gen.voiceai.telephony.v1 import telephony_service_pb2_grpc
from common.gen.voiceai.tenant.v1 import (
    api_key_internal_service_pb2_grpc,
    call_record_internal_service_pb2_grpc,
    data_key_internal_service_pb2_grpc,
    data_protection_service_pb2_grpc,
    provider_key_internal_service_pb2_grpc,
    tenant_service_pb2_grpc,
    usage_service_pb2_grpc,
)
from common.plans import PlanBook
from common.pricing import PricingSettings, book_from_settings
from common.quotas import QuotaSettings, TenantQuotas
from common.readiness import Readiness, attach_readiness
from common.redis_conn import RedisSettings, open_redis
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from common.store_metrics import POOLS
from tenant_svc.api_key_internal import SERVICE as API_KEY_INTERNAL_SERVICE
from tenant_svc.api_key_internal import ApiKeyInternalServicer
from tenant_svc.changes import ChangeListener
from tenant_svc.credentials import ApiKeyIssuer, PostgresApiKeys
from tenant_svc.db.database import DatabaseSettings, open_pool
from tenant_svc.db.health import postgres_dependency
from tenant_svc.protection import DataProtection
from tenant_svc.protection_server import (
    DataKeyInternalServicer,
    DataProtectionServicer,
    ProviderKeyInternalServicer,
)
from tenant_svc.ratelimit import TenantRateLimit
from tenant_svc.records import SERVICE as RECORDS_SERVICE
from tenant_svc.records import CallRecordServicer
from tenant_svc.repository import Repository
from tenant_svc.retention import RetentionPurger, RetentionSettings
from tenant_svc.server import TenantServicer
from tenant_svc.telephony.server import TelephonyServicer
from tenant_svc.telephony.settings import LiveKitSettings
from tenant_svc.telephony.wiring import Telephony, build_telephony
from tenant_svc.usage_server import UsageServicer

log = logging.getLogger(__name__)

DEFAULT_PORT = 50064
SERVICE = "voiceai.tenant.v1.TenantService"
TELEPHONY_SERVICE = "voiceai.telephony.v1.TelephonyService"
DATA_PROTECTION_SERVICE = "voiceai.tenant.v1.DataProtectionService"
PROVIDER_KEY_INTERNAL_SERVICE = "voiceai.tenant.v1.ProviderKeyInternalService"
DATA_KEY_INTERNAL_SERVICE = "voiceai.tenant.v1.DataKeyInternalService"
USAGE_SERVICE = "voiceai.tenant.v1.UsageService"
# Platform RPCs that name no tenant in their metadata (platform operators only, per RBAC).
TENANTLESS = frozenset(
    f"/{SERVICE}/{m}" for m in ("CreateTenant", "ListTenants", "DeleteTenant", "LookupPhoneNumber")
) | {f"/{API_KEY_INTERNAL_SERVICE}/LookupApiKey"}


class Settings(ServiceSettings):
    """tenant_svc settings (env prefix VOICEAI_); the database is configured by DatabaseSettings."""


class TenantHost(ServiceHost):
    """tenant_svc's host; ``telephony`` is its LiveKit side (None when LiveKit is not configured)."""

    telephony: Telephony | None = None
    readiness: Readiness | None = None


async def build_host(
    settings: Settings,
    database: DatabaseSettings | None = None,
    *,
    auth_settings: AuthSettings | None = None,
    redis_settings: RedisSettings | None = None,
    on_change: ChangeListener | None = None,
    livekit_settings: LiveKitSettings | None = None,
    kek_settings: KekSettings | None = None,
    retention_settings: RetentionSettings | None = None,
) -> TenantHost:
    """tenant_svc's host: database pool, auth, caches, telephony, servicers."""
    auth_settings = auth_settings or AuthSettings()
    redis_settings = redis_settings or RedisSettings()
    # No KEK, no start (MissingKek names the setting): tenant data is never stored in clear.
    key_provider = await build_key_provider(kek_settings or KekSettings())
    protection = DataProtection(TenantKeyring(key_provider))
    pool = await open_pool(database or DatabaseSettings())
    repo = Repository(pool, protection, book_from_settings(PricingSettings()))
    auth = build_auth(auth_settings, api_keys=PostgresApiKeys(repo))
    redis = open_redis(redis_settings) if redis_settings.url else None
    cache = ConfigCache(redis, prefix=redis_settings.key_prefix) if redis is not None else None

    async def changed(kind: str, tenant_id: str, resource_id: str) -> None:
        if kind == "api_key" and auth.api_key_cache is not None:
            auth.api_key_cache.invalidate(resource_id)
        if cache is not None:
            try:
                await cache.on_change(kind, tenant_id, resource_id)
            except Exception:  # the change is committed; a stale cache entry expires by TTL
                log.warning("config cache not invalidated for %s %s", kind, resource_id, exc_info=True)
        if on_change is not None:
            result = on_change(kind, tenant_id, resource_id)
            if result is not None:
                await result

    rate = (
        TenantRateLimit(
            TenantQuotas(redis, PlanBook(), QuotaSettings(), prefix=redis_settings.key_prefix), repo
        )
        if redis is not None
        else None
    )
    lk_settings = livekit_settings or LiveKitSettings()
    telephony = build_telephony(repo, lk_settings)
    sip = telephony.provisioner if telephony is not None else None
    servicer = TenantServicer(repo, ApiKeyIssuer(auth_settings), changed, rate, sip)
    phones = TelephonyServicer(repo, lk_settings, sip, telephony.dialer if telephony is not None else None)
    host = TenantHost(
        settings,
        [
            ServiceBinding(
                SERVICE,
                lambda server: tenant_service_pb2_grpc.add_TenantServiceServicer_to_server(servicer, server),
            ),
            ServiceBinding(  # issue 15: durable call records from the gateway (internal only)
                RECORDS_SERVICE,
                lambda server: (
                    call_record_internal_service_pb2_grpc.add_CallRecordInternalServiceServicer_to_server(
                        CallRecordServicer(repo), server
                    )
                ),
            ),
            ServiceBinding(
                API_KEY_INTERNAL_SERVICE,
                lambda server: api_key_internal_service_pb2_grpc.add_ApiKeyInternalServiceServicer_to_server(
                    ApiKeyInternalServicer(PostgresApiKeys(repo)), server
                ),
            ),
            ServiceBinding(
                DATA_PROTECTION_SERVICE,
                lambda server: data_protection_service_pb2_grpc.add_DataProtectionServiceServicer_to_server(
                    DataProtectionServicer(repo, protection, changed, rate), server
                ),
            ),
            ServiceBinding(
                PROVIDER_KEY_INTERNAL_SERVICE,
                lambda server: (
                    provider_key_internal_service_pb2_grpc.add_ProviderKeyInternalServiceServicer_to_server(
                        ProviderKeyInternalServicer(repo, protection), server
                    )
                ),
            ),
            ServiceBinding(
                DATA_KEY_INTERNAL_SERVICE,
                lambda server: (
                    data_key_internal_service_pb2_grpc.add_DataKeyInternalServiceServicer_to_server(
                        DataKeyInternalServicer(repo, protection), server
                    )
                ),
            ),
            ServiceBinding(
                USAGE_SERVICE,
                lambda server: usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
                    UsageServicer(repo, rate), server
                ),
            ),
            ServiceBinding(
                TELEPHONY_SERVICE,
                lambda server: telephony_service_pb2_grpc.add_TelephonyServiceServicer_to_server(
                    phones, server
                ),
            ),
        ],
        require_call_id=False,
        tenantless=TENANTLESS,
        auth=auth,
    )
    if telephony is not None:
        host.telephony = telephony

        async def start_reconciling() -> None:
            telephony.reconciler.start()

        host.on_serving.append(start_reconciling)
        host.on_draining.append(telephony.reconciler.stop)
        host.on_stop.append(telephony.aclose)
    retention = retention_settings or RetentionSettings()
    purger = RetentionPurger(repo, batch_size=retention.batch_size)

    async def start_purging() -> None:
        purger.start(retention.purge_interval_s)

    host.on_serving.append(start_purging)
    host.on_draining.append(purger.stop)
    # Readiness follows PostgreSQL (issue 15): NOT_SERVING without it, liveness unaffected.
    host.readiness = attach_readiness(host, [postgres_dependency(pool)])
    host.on_stop.append(pool.close)
    host.on_stop.append(key_provider.aclose)
    POOLS.watch(pool)  # pool gauges on /metrics (issue 16)
    host.on_stop.append(lambda: _forget(pool))
    if redis is not None:
        host.on_stop.append(redis.aclose)
    return host


async def build_ready(settings: Settings) -> ServiceHost:
    """The host for ``python -m tenant_svc``."""
    return await build_host(settings)


async def _forget(pool: object) -> None:
    POOLS.forget(pool)
