"""STT engines: one module per engine, each a Recognizer."""

REGISTRY = {"local": "stt_svc.providers.whisper_local:WhisperRecognizer"}

__all__ = ["REGISTRY"]
