"""Idempotent payments, reference design: a Redis lock per key and the answer kept in Redis."""
