"""The catalog: one folder per challenge, its loader (``challenges.catalog``) and schema.

Nothing is imported here, so a reference design importing ``challenges.service`` stays light.
"""
