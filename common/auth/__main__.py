"""``python -m common.auth mint --tenant demo-tenant --role admin``: a dev token on stdout.

Dev mode only: it signs with the local dev key (``VOICEAI_AUTH_DEV_KEY_DIR``, created on first
use). In jwt mode tokens come from the identity provider. The key itself is never printed.
"""

from __future__ import annotations

import argparse
import sys

from common.auth.internal import mint_dev_token
from common.auth.keys import dev_signing_key
from common.auth.principal import PLATFORM, ROLES
from common.auth.settings import AuthSettings


def main(argv: list[str] | None = None) -> int:
    """The auth command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m common.auth", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a dev user token")
    mint.add_argument("--tenant", help="the tenant the token is for (omit with --platform)")
    mint.add_argument(
        "--role",
        action="append",
        default=[],
        choices=sorted(ROLES - {PLATFORM}),
        help="a role (repeatable)",
    )
    mint.add_argument("--platform", action="store_true", help="a platform operator token (any tenant)")
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    mint.add_argument("--subject", default="dev-user", help="the token's 'sub' (default dev-user)")
    args = parser.parse_args(argv)

    settings = AuthSettings()
    if settings.mode != "dev":
        parser.error(
            "minting needs dev mode (VOICEAI_AUTH_MODE=dev); in jwt mode your identity provider issues tokens"
        )
    if not args.platform and not args.tenant:
        parser.error("--tenant is required (or --platform for an operator token)")
    if args.platform and args.tenant:
        parser.error("a platform token acts on any tenant: drop --tenant")
    if not 1 <= args.ttl <= 30 * 86400:
        parser.error("--ttl must be between 1 second and 30 days")
    roles = [*args.role, *([PLATFORM] if args.platform else [])]
    if not roles:
        parser.error("give at least one --role (viewer, agent, admin) or --platform")
    key = dev_signing_key(settings.dev_key_dir)
    token = mint_dev_token(
        key,
        tenant=args.tenant,
        roles=roles,
        ttl_s=args.ttl,
        subject=args.subject,
        issuer=settings.user_issuer,
        audience=settings.audience,
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
