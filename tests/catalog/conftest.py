"""The environment fixture of the challenge tests, shared by this directory's modules."""

from tests.challenges.conftest import env  # noqa: F401
