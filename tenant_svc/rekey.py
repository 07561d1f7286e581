"""KEK rotation, step two: rewrap every tenant's data keys under the current KEK.

Step one is outside the service: add a KEK and make it current (``python -m common.crypto
rotate-kek var/kek.json``, or rotate the Vault transit key), then restart tenant_svc so new
wrappings use it. Then ``python -m tenant_svc.rekey`` rewraps the data keys still under an old
KEK, tenant by tenant (each in its own RLS-bound transaction; safe to re-run, and to run while
serving). No tenant data is rewritten. When it reports 0 left, the old KEK can be retired. It
also seals transcripts still stored in clear (rows written before migration 0002).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from common.crypto import KekSettings, TenantKeyring, build_key_provider
from tenant_svc.db.database import DatabaseSettings, open_pool
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository

log = logging.getLogger(__name__)


async def rewrap_all(
    repo: Repository, protection: DataProtection, only: Collection[str] | None = None
) -> tuple[int, int]:
    """Rewrap every tenant's (or ``only`` these tenants') data keys under the current KEK;
    returns (tenants seen, keys rewrapped)."""
    tenants = keys = 0
    after = ""
    while True:
        async with repo.platform() as p:
            page = await p.list_tenants(after, 500)
        for tenant in page:
            tid = tenant.name.split("/", 1)[1]
            if only is not None and tid not in only:
                continue
            async with repo.tenant(tid) as t:
                keys += await protection.rewrap_data_keys(t)
            tenants += 1
        if len(page) < 500:
            return tenants, keys
        after = page[-1].name.split("/", 1)[1]


async def seal_plaintext(
    repo: Repository, protection: DataProtection, only: Collection[str] | None = None, batch: int = 200
) -> int:
    """Seal every transcript still stored in clear (written before migration 0002)."""
    total = 0
    after = ""
    while True:
        async with repo.platform() as p:
            page = await p.list_tenants(after, 500)
        for tenant in page:
            tid = tenant.name.split("/", 1)[1]
            if only is not None and tid not in only:
                continue
            while True:
                async with repo.tenant(tid) as t:
                    n = await protection.seal_plaintext(t, batch)
                total += n
                if n < batch:
                    break
        if len(page) < 500:
            return total
        after = page[-1].name.split("/", 1)[1]


async def _main() -> None:
    provider = await build_key_provider(KekSettings())
    pool = await open_pool(DatabaseSettings())
    try:
        protection = DataProtection(TenantKeyring(provider))
        repo = Repository(pool, protection)
        tenants, keys = await rewrap_all(repo, protection)
        print(f"rewrapped {keys} data keys of {tenants} tenants under KEK {provider.current_kek_id}")
        print(f"sealed {await seal_plaintext(repo, protection)} transcripts that were stored in clear")
    finally:
        await pool.close()
        await provider.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main())
