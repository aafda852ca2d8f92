"""Reference designs of the idempotent-payments challenge."""
