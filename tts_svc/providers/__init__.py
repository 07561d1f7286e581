"""TTS engines: one module per engine, each a Synthesizer.

``REGISTRY`` names the local engine classes (``VOICEAI_TTS_ENGINE``); the cloud providers
(``deepgram_aura``, ``elevenlabs_tts``) are built by ``tts_svc.app`` from their settings and
composed with the local one by ``tts_svc.chain``.
"""

REGISTRY = {"local": "tts_svc.providers.piper_local:PiperSynthesizer"}

__all__ = ["REGISTRY"]
