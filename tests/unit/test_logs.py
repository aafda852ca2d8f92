"""No secret reaches a log line."""

from __future__ import annotations

import logging

import pytest

from bot.logs import SECRETS, RedactingFilter


@pytest.fixture
def captured() -> list[str]:
    lines: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Sink()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)


def test_url_passwords_are_masked(captured: list[str]) -> None:
    logging.getLogger("test.redaction").info(
        "connecting to %s", "postgresql://learner:s3cr3t-pw@127.0.0.1:5432/db"
    )
    assert captured == ["connecting to postgresql://learner:***@127.0.0.1:5432/db"]


def test_registered_secrets_are_masked_anywhere(captured: list[str]) -> None:
    SECRETS.add("AKIA-registered-key-123")
    logging.getLogger("test.redaction").info(
        "key=%s and again AKIA-registered-key-123", "AKIA-registered-key-123"
    )
    assert captured == ["key=*** and again ***"]


def test_secrets_in_tracebacks_are_masked(captured: list[str]) -> None:
    SECRETS.add("tb-secret-value-9")
    try:
        raise RuntimeError("auth failed for tb-secret-value-9")
    except RuntimeError:
        logging.getLogger("test.redaction").exception("boom")
    assert "tb-secret-value-9" not in "\n".join(captured)
    assert "auth failed for ***" in "\n".join(captured)
