"""STT engines: one module per engine, each a Recognizer.

``REGISTRY`` names the local engine classes (``VOICEAI_STT_ENGINE``); ``CLOUD`` the cloud
providers' ``ProviderSpec``s (each declared once in its module), which ``stt_svc.app.make_chain``
builds when this instance is configured for them and composes in ``stt_svc.chain``.
"""

REGISTRY = {"local": "stt_svc.providers.whisper_local:WhisperRecognizer"}
CLOUD = ("stt_svc.providers.deepgram_nova:PROVIDER",)

__all__ = ["CLOUD", "REGISTRY"]
