"""The conversation and tools as chat completions JSON (OpenAI's wire format)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llm_svc.providers.base import Message, Tool

# Appended to an interrupted agent reply (which holds only what the caller heard), so the model
# sees that it was cut off rather than that it chose to stop there mid-sentence.
INTERRUPTED_MARK = "..."
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def to_message(m: Message) -> dict[str, Any] | None:
    """One message, or None for one that would only confuse the model (see below)."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role != "assistant":
        return {"role": m.role, "content": m.content}
    content = m.content
    if m.interrupted:
        if not content.strip() and not m.tool_calls:
            return None  # cut off before a word was heard: the caller never got this turn
        content = content.rstrip() + INTERRUPTED_MARK if content.strip() else content
    out: dict[str, Any] = {"role": "assistant", "content": content or None}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json or "{}"},
            }
            for c in m.tool_calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    return out


def to_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Chat messages in the OpenAI wire format."""
    return [d for d in map(to_message, messages) if d is not None]


def to_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Function tools; the servicer has checked that each schema parses as a JSON object."""
    out = []
    for t in tools:
        fn: dict[str, Any] = {
            "name": t.name,
            "parameters": json.loads(t.parameters_json) if t.parameters_json.strip() else NO_PARAMETERS,
        }
        if t.description:
            fn["description"] = t.description
        out.append({"type": "function", "function": fn})
    return out
