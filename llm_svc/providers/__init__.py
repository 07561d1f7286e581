"""LLM engines: one module per engine, each a ChatModel."""

REGISTRY = {"local": "llm_svc.providers.offline_responder:OfflineResponder"}

__all__ = ["REGISTRY"]
