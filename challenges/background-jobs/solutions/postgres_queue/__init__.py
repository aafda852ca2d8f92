"""Background jobs, reference design: a PostgreSQL jobs table claimed with SKIP LOCKED and a lease."""
