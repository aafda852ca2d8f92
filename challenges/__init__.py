"""The catalog: one folder per challenge, its loader and schema."""

from challenges.catalog import Catalog, Challenge, ChallengeError

__all__ = ["Catalog", "Challenge", "ChallengeError"]
