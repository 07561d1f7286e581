"""stt_svc."""
