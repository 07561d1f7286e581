"""TTS engines: one module per engine, each a Synthesizer.

``REGISTRY`` names the local engine classes (``VOICEAI_TTS_ENGINE``); ``CLOUD`` the cloud
providers' ``ProviderSpec``s (``deepgram_aura``, ``elevenlabs_tts``, each declared once in its
module), which ``tts_svc.app.make_chain`` builds when configured and ``tts_svc.chain`` composes
with the local one.
"""

REGISTRY = {"local": "tts_svc.providers.piper_local:PiperSynthesizer"}
CLOUD = ("tts_svc.providers.deepgram_aura:PROVIDER", "tts_svc.providers.elevenlabs_tts:PROVIDER")

__all__ = ["CLOUD", "REGISTRY"]
