"""tts_svc/providers."""
