"""llm_svc."""
