"""tts_svc."""
