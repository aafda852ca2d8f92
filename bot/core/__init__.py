"""The coach's use-cases, independent of any chat platform."""
