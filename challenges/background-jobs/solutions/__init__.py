"""Reference designs of the background-jobs challenge."""
