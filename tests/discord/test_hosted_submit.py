"""/submit with attached code, through the real discord.py client and the fake Discord: the
attachment is checked and downloaded (capped) before it is queued, its build and run logs go by
DM (the last lines, and the full logs as files within Discord's upload limit) and never to a
channel. Building and running code is scripted here (tests/hosted, and one real grade through
the queue in tests/hosted/test_coach_queue.py, prove it)."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import discord
import pytest
from sqlalchemy import func, select

from bot.adapters.discord.client import CruscibleClient
from bot.app import App
from bot.core.sources import MAX_ARCHIVE_BYTES
from bot.store import Contest, Submission
from tests.community.support import AnySource, ScriptedGrader, ScriptedHosted, scripted_hosting
from tests.discord.fake import (
    ADA,
    CHANNEL_ID,
    EVERYONE_PERMISSIONS,
    GRACE,
    GUILD_ID,
    MANAGE_GUILD,
    UPLOAD_MAX,
    Call,
    FakeDiscord,
)

SECRET_LINE = "web[0]: KeyError: 'REDIS_URL' at boot"


def tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def uploads(app: App) -> list[Path]:
    folder = app.settings.data_dir / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


def carrying(calls: list[Call], text: str) -> list[Call]:
    return [c for c in calls if c.method in ("POST", "PATCH") and text in c.text()]


@pytest.fixture
def hosted(app: App, monkeypatch: pytest.MonkeyPatch) -> ScriptedHosted:
    scripted = ScriptedHosted(ScriptedGrader(scores={}))
    monkeypatch.setattr(app.coach, "hosted", app.coach.hosted)
    monkeypatch.setattr(app.coach, "code_environment", app.coach.code_environment)
    scripted_hosting(app.coach, scripted)
    return scripted


async def submit_file(fake: FakeDiscord, name: str, content: bytes, **kw: int) -> str:
    aid, resolved = fake.attach(name, content, **kw)
    command = fake.slash("submit", who=GRACE, resolved=resolved, code=aid, challenge="rate-limiter")
    return await fake.interact(command)


async def test_other_types_and_oversize_attachments_are_refused_unread(
    bot: CruscibleClient, fake: FakeDiscord, app: App, hosted: ScriptedHosted
) -> None:
    gets = len(fake.cdn_gets)  # the session's fake: earlier tests' downloads
    token = await submit_file(fake, "app.rar", b"Rar!")
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    assert "attach a .zip or .tar.gz" in answer.embeds()[0]["description"]
    token = await submit_file(fake, "big.zip", b"PK", size=MAX_ARCHIVE_BYTES + 1)
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    assert "the limit is 25 MB" in answer.embeds()[0]["description"]
    assert fake.cdn_gets[gets:] == [] and hosted.prepared == [] and uploads(app) == []


async def test_attached_code_is_built_hosted_and_its_logs_go_by_dm_only(
    bot: CruscibleClient, fake: FakeDiscord, app: App, hosted: ScriptedHosted
) -> None:
    content = tarball({"main.py": "print('up')\n"})
    hosted.crashes = AnySource(f"web[0] exited 1\n{SECRET_LINE}")
    since = len(fake.calls)
    token = await submit_file(fake, "limiter.tar.gz", content)
    await fake.wait_for(lambda: [c for c in carrying(fake.calls[since:], SECRET_LINE)])
    await fake.wait_for(lambda: len(fake.webhook_calls(token)) >= 2)
    (stored,) = hosted.received
    assert hosted.received[stored] == content  # the bytes the learner attached
    leaks = carrying(fake.calls[since:], SECRET_LINE)
    assert leaks and all(fake.is_dm(c) for c in leaks)  # logs by DM, never in a channel
    async with app.coach.store.session() as s:
        sub = await s.scalar(
            select(Submission).where(Submission.kind == "code").order_by(Submission.id.desc())
        )
    assert sub is not None and (sub.url, sub.hosted) == ("limiter.tar.gz", True)
    async with asyncio.timeout(10):  # graded: the archive is removed as the queue settles
        while uploads(app):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_the_full_logs_reach_the_learner_as_files_by_dm_masked_and_trimmed(
    bot: CruscibleClient, fake: FakeDiscord, app: App, hosted: ScriptedHosted
) -> None:
    password = "pw-d1sc0rd-77aa"
    line = f"GET /v1/check redis://u:{password}@127.0.0.1:6379 took 2 ms\n"
    big = line * (4 * 2**20 // len(line))  # a kept log is at most 4 MiB: 3 of them are over
    hosted.data_dir, hosted.secrets = app.settings.data_dir, (password,)
    hosted.logs = {"build.log": "ok\n", "web-0.log": big, "web-1.log": big, "worker-0.log": big}
    hosted.crashes = AnySource(f"web[0] exited 1\n{SECRET_LINE}")
    since = len(fake.calls)
    await submit_file(fake, "limiter.tar.gz", tarball({"main.py": "print('up')\n"}))
    [dm] = await fake.wait_for(lambda: [c for c in fake.calls[since:] if c.files and fake.is_dm(c)])
    assert sorted(dm.files) == ["build.log", "web-0.log", "web-1.log", "worker-0.log"]
    assert dm.status == 200 and sum(map(len, dm.files.values())) <= UPLOAD_MAX
    assert dm.files["build.log"] == b"ok\n"
    web = dm.files["web-0.log"].decode()
    assert web.startswith("[first ") and web.endswith("took 2 ms\n")
    assert "full logs attached" in dm.text()
    assert not [c for c in fake.calls[since:] if password in c.text()]
    leaks = carrying(fake.calls[since:], SECRET_LINE)
    assert leaks and all(fake.is_dm(c) for c in leaks)
    assert not [c for c in fake.refused if c.status == 413]


async def test_logs_sends_the_full_logs_by_dm_to_their_owner_only(
    bot: CruscibleClient, fake: FakeDiscord, app: App, hosted: ScriptedHosted
) -> None:
    password = "pw-l0gs-5c1d"
    hosted.data_dir, hosted.secrets = app.settings.data_dir, (password,)
    hosted.logs = {"build.log": "ok\n", "web-0.log": f"up redis://u:{password}@127.0.0.1\n"}
    async with app.coach.store.session() as s:
        before = await s.scalar(select(func.max(Submission.id))) or 0
    await submit_file(fake, "limiter.tar.gz", tarball({"main.py": "print('up')\n"}))
    async with asyncio.timeout(20):
        while True:
            async with app.coach.store.session() as s:
                sub = await s.scalar(select(Submission).where(Submission.id > before))
            if sub is not None and sub.status == "done":
                break
            await asyncio.sleep(0.05)
    assert sub.logs_ref is not None
    since = len(fake.calls)
    token = await fake.interact(fake.slash("logs", who=GRACE, submission=sub.logs_ref))
    [dm] = await fake.wait_for(lambda: carrying(fake.calls[since:], "The logs of your"))
    assert fake.is_dm(dm) and sorted(dm.files) == ["build.log", "web-0.log"]
    assert b"up redis://u:" in dm.files["web-0.log"] and password not in dm.text()
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    assert "in your DMs" in answer.text()

    since = len(fake.calls)
    token = await fake.interact(fake.slash("logs", who=ADA, submission=sub.logs_ref))
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    assert f"you have no code submission {sub.logs_ref}" in answer.text()
    assert not carrying(fake.calls[since:], "The logs of your")


async def test_files_over_the_upload_limit_are_refused_by_the_fake_as_by_discord(
    bot: CruscibleClient, fake: FakeDiscord
) -> None:
    channel = bot.get_partial_messageable(CHANNEL_ID)
    with pytest.raises(discord.HTTPException) as info:
        await channel.send(file=discord.File(io.BytesIO(b"x" * (UPLOAD_MAX + 1)), "big.log"))
    assert (info.value.status, info.value.code) == (413, 40005)


async def test_a_failed_build_answers_privately_which_step_failed(
    bot: CruscibleClient, fake: FakeDiscord, app: App, hosted: ScriptedHosted
) -> None:
    hosted.broken_builds = AnySource(f"pip install failed (exit 1)\n{SECRET_LINE}")
    since = len(fake.calls)
    token = await submit_file(fake, "broken.zip", b"PK\x05\x06" + b"\0" * 18)
    await fake.wait_for(
        lambda: [c for c in fake.webhook_calls(token) if "build failed" in c.text()]
    )
    leaks = carrying(fake.calls[since:], SECRET_LINE)
    assert leaks and all(fake.is_dm(c) for c in leaks)


async def test_an_admin_creates_a_hosted_only_contest(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    options = [
        {"name": "challenge", "type": 3, "value": "rate-limiter"},
        {"name": "start", "type": 3, "value": "2030-02-04T09:00"},
        {"name": "end", "type": 3, "value": "2030-02-11T09:00"},
        {"name": "hosted_only", "type": 5, "value": True},
    ]
    command = fake.slash("admin", who=ADA, permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD)
    command["data"]["options"] = [
        {
            "name": "contest",
            "type": 2,
            "options": [{"name": "create", "type": 1, "options": options}],
        }
    ]
    community = await app.coach.communities.get("discord", str(GUILD_ID))
    await app.coach.communities.configure(community.id, channel_id=str(CHANNEL_ID))
    token = await fake.interact(command)
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    assert "hosted code only" in answer.text()
    async with app.coach.store.session() as s:
        contest = await s.scalar(select(Contest).order_by(Contest.id.desc()))
    assert contest is not None and contest.hosted_only
    await app.coach.contests.cancel(community, contest.id)  # other tests see no contest of ours
