"""tests/doubles."""
