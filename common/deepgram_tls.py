"""One TLS context for every Deepgram websocket of the process.

deepgram-sdk 7 opens its listen and speak websockets with ``websockets``' legacy ``connect``
and no ``ssl`` argument, so asyncio builds a fresh default context, loading the whole CA
bundle, for every ``wss://`` connection: 20-70 ms of CPU on the event loop that moves every
other stream's audio, once per new STT stream. The SDK offers no way to pass a context, so
``install`` wraps the name each SDK module connects through (``websockets_client_connect``)
to add one context, built once at start. Plain ``ws://`` (a self-hosted endpoint) is left
alone. If a later SDK renames that global, nothing is wrapped and a warning says so; the
connections then still work, only slower to open.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The listen and speak v1 clients (what stt_svc and tts_svc use) each import the connect
# function into their own namespace, in the client module and in the raw client module.
SDK_MODULES = (
    "deepgram.listen.v1.client",
    "deepgram.listen.v1.raw_client",
    "deepgram.speak.v1.client",
    "deepgram.speak.v1.raw_client",
)
_NAME = "websockets_client_connect"
_MARK = "_voiceai_tls"


def _wrap(original: Callable[..., Any], context: ssl.SSLContext) -> Callable[..., Any]:
    def connect(uri: str, *args: Any, **kwargs: Any) -> Any:
        if str(uri).startswith("wss://"):
            kwargs.setdefault("ssl", context)
        return original(uri, *args, **kwargs)

    setattr(connect, _MARK, (original, context))
    return connect


def install(context: ssl.SSLContext | None = None) -> ssl.SSLContext | None:
    """Make the SDK's websockets use ``context`` (default: the system's, built now).

    Idempotent: without ``context`` a second call keeps the context already installed; with
    one it replaces it. Returns the context in use, or None when the SDK's connect function
    could not be found.
    """
    context = context or installed_context(SDK_MODULES[0]) or ssl.create_default_context()
    installed = None
    for name in SDK_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, _NAME, None)
        if current is None:
            log.warning("deepgram-sdk has no %s.%s: its websockets build their own TLS context", name, _NAME)
            continue
        original = getattr(current, _MARK, (current, None))[0]
        setattr(module, _NAME, _wrap(original, context))
        installed = context
    return installed


def installed_context(module: str) -> ssl.SSLContext | None:
    """The context ``install`` put on ``module``'s connect function, if any (for tests)."""
    current = getattr(importlib.import_module(module), _NAME, None)
    marked = getattr(current, _MARK, None)
    return marked[1] if marked else None
