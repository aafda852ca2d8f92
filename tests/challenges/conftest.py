"""One environment per challenge test module, for the challenge the module names in CHALLENGE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.app import App
from bot.core.outbox import Actor
from provisioning import Environment


@pytest.fixture(scope="module")
async def env(app: App, request: pytest.FixtureRequest) -> AsyncIterator[Environment]:
    spec = app.coach.challenge(request.module.CHALLENGE).environment_spec("test:validity")
    environment = await app.coach.create_environment(Actor("test", "validity", "v"), spec)
    yield environment
    await app.coach.destroy_environment(environment.id)
