"""stt_svc/providers."""
