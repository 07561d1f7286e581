"""llm_svc/providers."""
