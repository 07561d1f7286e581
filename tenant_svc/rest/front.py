"""The ASGI app: the transcoded API, /openapi.json, the API reference page and the portal.

Every response carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script), so text that slipped into a page could not run even if it were not
already inserted as text. The portal holds its credential in the tab's sessionStorage and sends
it as ``Authorization``: no cookie, so there is no ambient credential to forge a request with
(CSRF needs one).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_svc.rest.errors import HttpError
from tenant_svc.rest.handler import Transcoder, error_response
from tenant_svc.rest.routes import RouteTable
from tenant_svc.rest.settings import RestSettings
from tenant_svc.rest.trial_call import TrialCalls
from tenant_svc.rest.upstream import open_channel

PORTAL_DIR = Path(__file__).parent / "portal"
SPEC_FILE = Path(__file__).parent / "openapi.json"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class GuardMiddleware:
    """Adds the security headers and refuses a declared body over the limit before reading it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            error = HttpError(
                413,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body is over the limit of {self.max_body_bytes} bytes",
            )
            await error_response(error)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


@cache
def openapi_document() -> dict[str, Any]:
    """The committed spec (with the proto comments); generated from the descriptors if absent."""
    if SPEC_FILE.exists():
        loaded: dict[str, Any] = json.loads(SPEC_FILE.read_text())
        return loaded
    from tenant_svc.rest.openapi import build_document

    return build_document({})


def build_app(settings: RestSettings, channel: grpc.aio.Channel | None = None) -> Starlette:
    """The front for ``settings``; ``channel`` (owned by the caller) replaces the one it would open
    at start-up, on the loop that serves."""
    transcoder = Transcoder(RouteTable.from_descriptors(), channel, settings)
    trials = TrialCalls(settings.gateway_address)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if channel is not None:
            yield
            return
        upstream = open_channel(settings.tenant_address)
        transcoder.bind(upstream)
        try:
            yield
        finally:
            await upstream.close()

    async def ready(_request: Request) -> Response:
        # Readiness: this front can serve new requests only while tenant_svc says it can.
        serving = await transcoder.upstream_serving()
        return JSONResponse(
            {"status": "SERVING" if serving else "NOT_SERVING"}, status_code=200 if serving else 503
        )

    async def live(_request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})  # the loop answers: not stuck

    async def spec(_request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def reference(_request: Request) -> Response:
        return FileResponse(PORTAL_DIR / "reference.html")

    async def home(_request: Request) -> Response:
        return RedirectResponse("/portal/", status_code=307)

    async def unrouted(request: Request, exc: Exception) -> Response:
        # Paths Starlette's router itself cannot match (e.g. a decoded newline): the same JSON.
        status = getattr(exc, "status_code", 404)
        code = grpc.StatusCode.NOT_FOUND if status == 404 else grpc.StatusCode.UNIMPLEMENTED
        return error_response(HttpError(status, code, f"no API method answers {request.method} this path"))

    middleware = [Middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes)]
    if settings.cors_list():
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_list(),
                allow_methods=_METHODS,
                allow_headers=["authorization", "content-type", "x-tenant-id", "traceparent"],
                expose_headers=["retry-after"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[
            Route("/", home),
            Route("/openapi.json", spec),
            Route("/healthz", live),
            Route("/readyz", ready),
            Route("/docs", reference),
            Route("/portal/api/test-call", trials.handle, methods=["POST"]),
            Mount("/portal", StaticFiles(directory=PORTAL_DIR, html=True), name="portal"),
            Route("/{path:path}", transcoder.handle, methods=_METHODS),
        ],
        middleware=middleware,
        exception_handlers={404: unrouted, 405: unrouted},
        lifespan=lifespan,
    )
