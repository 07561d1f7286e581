"""Request checks for the tenant API: resource names, ids, E.164, providers, voices, field masks
and page tokens. Every failure is INVALID_ARGUMENT naming the field and what would be valid."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from common.errors import InvalidArgument
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.providers import KNOWN_PROVIDERS

T = TypeVar("T")

TENANT_ID = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
RESOURCE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$|^multi$")

# Engines each service can run, by the name used in provider chains.
PROVIDERS = {f"{service}_providers": names for service, names in KNOWN_PROVIDERS.items()}
# What a voice id looks like per TTS provider (the first provider of the chain owns the voice).
VOICES: dict[str, re.Pattern[str]] = {
    "local": re.compile(r"^(en_US-joe-medium|joe)$"),
    "deepgram": re.compile(r"^aura-2-[a-z]+-[a-z]{2}$"),
    "elevenlabs": re.compile(r"^[A-Za-z0-9]{20}$"),
}
ROLES = ("admin", "agent", "viewer")
MAX_PROMPT = 32_000
MAX_TEXT = 1_000
MAX_KEYTERMS = 100
MAX_PAGE = 1000
DEFAULT_PAGE = 50


def tenant_of(name: str, field: str = "name") -> str:
    """``tenants/{tenant}`` (or a child of it) -> tenant id."""
    parts = name.split("/")
    if len(parts) < 2 or parts[0] != "tenants" or not TENANT_ID.match(parts[1]):
        raise InvalidArgument(f"{field} must look like 'tenants/{{tenant}}/...', got {name[:80]!r}")
    return parts[1]


def child_id(name: str, collection: str, field: str = "name") -> tuple[str, str]:
    """``tenants/{tenant}/{collection}/{id}`` -> (tenant id, id)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "tenants" or parts[2] != collection:
        raise InvalidArgument(
            f"{field} must look like 'tenants/{{tenant}}/{collection}/{{id}}', got {name[:80]!r}"
        )
    tenant = tenant_of(name, field)
    if not RESOURCE_ID.match(parts[3]):
        raise InvalidArgument(f"{field}: the id must be 1-63 lowercase letters, digits or hyphens")
    return tenant, parts[3]


def new_id(value: str, field: str, generated: str) -> str:
    """A client-chosen resource id, checked, or ``generated`` when none was given."""
    if not value:
        return generated
    if not RESOURCE_ID.match(value):
        raise InvalidArgument(
            f"{field} must be 1-63 lowercase letters, digits or hyphens, not starting with '-'"
        )
    return value


def tenant_id(value: str) -> str:
    """A tenant id, checked."""
    if not TENANT_ID.match(value):
        raise InvalidArgument(
            "tenant_id must be 3-40 lowercase letters, digits or hyphens, starting with a letter"
        )
    return value


def e164(value: str, field: str = "e164_number") -> str:
    """An E.164 number, checked."""
    if not E164.match(value):
        raise InvalidArgument(f"{field} must be an E.164 number like +14155550123 (a '+', then 7-15 digits)")
    return value


def roles(values: Sequence[str]) -> list[str]:
    """Roles, checked against the known ones."""
    if not values:
        raise InvalidArgument(f"api_key.roles must list at least one of {', '.join(ROLES)}")
    bad = [r for r in values if r not in ROLES]
    if bad:
        raise InvalidArgument(f"api_key.roles: unknown role {bad[0][:40]!r}; use {', '.join(ROLES)}")
    return sorted(set(values))


def _text(value: str, field: str, limit: int = MAX_TEXT) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {limit}")


def agent(a: pb.Agent) -> pb.Agent:
    """Checks a whole agent (after a field mask has been applied)."""
    if not a.system_prompt.strip():
        raise InvalidArgument("agent.system_prompt is required and must not be empty")
    _text(a.system_prompt, "agent.system_prompt", MAX_PROMPT)
    for field in ("display_name", "greeting", "voice", "stt_model", "llm_model", "tts_model"):
        _text(getattr(a, field), f"agent.{field}")
    if a.language_code and not LANGUAGE.match(a.language_code):
        raise InvalidArgument("agent.language_code must be a BCP-47 code like 'en-US', or 'multi'")
    for field, known in PROVIDERS.items():
        for name in getattr(a, field):
            if name not in known:
                raise InvalidArgument(
                    f"agent.{field}: unknown provider {name[:40]!r}; use {', '.join(known)}"
                )
    if a.voice:
        provider = a.tts_providers[0] if a.tts_providers else "local"
        if not VOICES[provider].match(a.voice):
            raise InvalidArgument(
                f"agent.voice: unknown voice {a.voice[:40]!r} for TTS provider '{provider}'"
            )
    if len(a.keyterms) > MAX_KEYTERMS:
        raise InvalidArgument(f"agent.keyterms has {len(a.keyterms)} terms; the limit is {MAX_KEYTERMS}")
    for term in a.keyterms:
        if not term.strip() or len(term) > 100:
            raise InvalidArgument("agent.keyterms: each term must be 1-100 characters")
    if a.transfer_number:
        e164(a.transfer_number, "agent.transfer_number")
    if not 0 <= a.max_tokens <= 8192:
        raise InvalidArgument("agent.max_tokens must be 0..8192 (0 = the LLM service's default)")
    if a.context_token_budget and not 256 <= a.context_token_budget <= 1_000_000:
        raise InvalidArgument("agent.context_token_budget must be 0 (no budget) or 256..1000000 tokens")
    if a.max_call_duration.seconds < 0 or a.max_call_duration.seconds > 24 * 3600:
        raise InvalidArgument("agent.max_call_duration must be between 0 and 24 hours")
    return a


def apply_mask(
    stored: Message, update: Message, mask: field_mask_pb2.FieldMask, allowed: Iterable[str]
) -> Message:
    """Returns ``stored`` with the masked fields of ``update``; ``*`` means every allowed field."""
    allowed = set(allowed)
    paths = list(mask.paths)
    if not paths:
        raise InvalidArgument(
            f"update_mask is required; name the fields to change ({', '.join(sorted(allowed))}) or '*'"
        )
    if paths == ["*"]:
        paths = sorted(allowed)
    for path in paths:
        if path not in allowed:
            raise InvalidArgument(
                f"update_mask: field {path[:60]!r} cannot be updated; use {', '.join(sorted(allowed))}"
            )
    merged = type(stored)()
    merged.CopyFrom(stored)
    for path in paths:
        merged.ClearField(path)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        update, merged, replace_message_field=True, replace_repeated_field=True
    )
    return merged


def page_size(value: int) -> int:
    """A page size, checked, with the default for 0."""
    if value < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(value or DEFAULT_PAGE, MAX_PAGE)


def encode_page(tenant: str, method: str, key: str | int) -> str:
    """A page token for the position ``key`` in ``tenant``'s ``method`` listing."""
    raw = json.dumps({"t": tenant, "m": method, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def next_token(
    tenant: str, method: str, fetched: Sequence[T], size: int, key: Callable[[T], str | int]
) -> str:
    """Lists fetch ``size + 1`` rows: an extra row means another page, continuing after ``key`` of
    the last row shown."""
    return encode_page(tenant, method, key(fetched[size - 1])) if len(fetched) > size else ""


def last_segment(name: str) -> str:
    """The last segment of a resource name."""
    return name.rsplit("/", 1)[1]


def decode_page(token: str, tenant: str, method: str, default: str | int) -> str | int:
    """The position after which to continue; a token from another list or tenant is refused."""
    if not token:
        return default
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["t"] != tenant or data["m"] != method or not isinstance(data["k"], type(default)):
            raise ValueError
        key: str | int = data["k"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("page_token is not valid for this request; start again without it") from e
    return key
