"""Idempotent payments, reference design: the key in PostgreSQL, one transaction around the charge."""
