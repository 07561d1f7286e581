"""TTS engines: one module per engine, each a Synthesizer."""

REGISTRY = {"local": "tts_svc.providers.piper_local:PiperSynthesizer"}

__all__ = ["REGISTRY"]
