"""Background jobs, reference design: a Redis stream with a consumer group, stale entries claimed again."""
