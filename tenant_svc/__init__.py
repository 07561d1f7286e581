"""tenant_svc."""
