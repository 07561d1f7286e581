"""Engine registry: maps a configured engine name to the class that implements it.

A name is either a key of the service's registry ("local", later "deepgram") or an import path
"package.module:Attr" — the latter lets operators plug in their own engine, and lets the
benchmark run services with zero-cost engines without any special code path in the service.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from common.errors import FailedPrecondition


def load(spec: str, registry: Mapping[str, str]) -> Any:
    """Import and return the object named by ``spec`` (a registry key or "module:attr")."""
    target = registry.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep:
        known = ", ".join(sorted(registry))
        raise FailedPrecondition(f"unknown engine {spec!r}: use one of {known}, or 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FailedPrecondition(f"engine {spec!r}: cannot import {module_name} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise FailedPrecondition(f"engine {spec!r}: {module_name} has no {attr}") from e
