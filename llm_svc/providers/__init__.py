"""LLM engines: one module per engine, each a ChatModel.

``REGISTRY`` names the local engine classes (``VOICEAI_LLM_ENGINE``); ``CLOUD`` the cloud
providers' ``ProviderSpec``s (each declared once in its module), which ``llm_svc.app.make_chain``
builds when this instance is configured for them.
"""

REGISTRY = {"local": "llm_svc.providers.offline_responder:OfflineResponder"}
CLOUD = ("llm_svc.providers.openai_chat:PROVIDER",)

__all__ = ["CLOUD", "REGISTRY"]
