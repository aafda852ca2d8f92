"""Code submitted through Slack, with the real bolt app against the fake Slack: an archive shared
in the app's DM (downloaded with the bot token, capped), a git URL in `/cruscible submit`, a
hosted-only contest; logs reach the learner in the DM only (the last lines, and the full logs as
files uploaded to the DM). Building and running code is scripted here (tests/hosted and
tests/hosted/test_coach_queue.py prove it)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import App
from bot.core.sources import MAX_ARCHIVE_BYTES
from bot.store import Submission
from tests.community.support import AnySource, ScriptedGrader, ScriptedHosted, scripted_hosting
from tests.slack.conftest import Workspace
from tests.slack.fakeslack import BOT_TOKEN

LEARNER = "U1"
DM = f"D{LEARNER}"
SECRET_LINE = "ERROR: No matching distribution found for fastapi==99"
GIT = "https://codeberg.org/u1/limiter"


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


def file_share(file: dict[str, Any], text: str = "rate-limiter") -> dict[str, Any]:
    """A file shared in the app's DM: https://api.slack.com/events/message/file_share."""
    return {
        "type": "message",
        "subtype": "file_share",
        "channel": DM,
        "channel_type": "im",
        "user": LEARNER,
        "text": text,
        "ts": f"{datetime.now(UTC).timestamp():.6f}",
        "files": [file],
    }


@pytest.fixture
def hosted(app: App, monkeypatch: pytest.MonkeyPatch) -> ScriptedHosted:
    scripted = ScriptedHosted(ScriptedGrader(scores={GIT: 81}))
    monkeypatch.setattr(app.coach, "hosted", app.coach.hosted)
    monkeypatch.setattr(app.coach, "code_environment", app.coach.code_environment)
    scripted_hosting(app.coach, scripted)
    return scripted


async def test_an_archive_shared_in_the_dm_is_downloaded_and_its_logs_stay_there(
    slack: Workspace, app: App, hosted: ScriptedHosted
) -> None:
    fake = slack.fake
    fake.add_channel(DM)
    content = zipped({"main.py": "print('up')\n", "requirements.txt": "fastapi==99\n"})
    shared = fake.share("limiter.zip", content)
    hosted.broken_builds = AnySource(f"pip install failed (exit 1)\n{SECRET_LINE}")
    assert (await slack.sender.event(file_share(shared))).status == 200
    await fake.wait_for(lambda c: c.channel == DM and SECRET_LINE in c.dump, within=20)
    await slack.settle()
    assert fake.downloads == [(shared["id"], BOT_TOKEN)]
    (received,) = hosted.received.values()
    assert received == content
    assert not [c for c in fake.public_calls() if SECRET_LINE in c.dump]  # never in a channel
    assert any(c.channel == DM and "build failed" in c.dump for c in fake.calls)
    async with app.coach.store.session() as s:
        sub = await s.scalar(select(Submission).order_by(Submission.id.desc()))
    assert sub is not None and (sub.kind, sub.url, sub.status) == ("code", "limiter.zip", "error")


async def test_the_full_logs_are_uploaded_to_the_learners_dm_masked(
    slack: Workspace, app: App, hosted: ScriptedHosted
) -> None:
    fake = slack.fake
    fake.add_channel(DM)
    password = "pw-s1ack-0b9e"
    hosted.data_dir, hosted.secrets = app.settings.data_dir, (password,)
    hosted.logs = {
        "build.log": "Successfully installed aiohttp\n",
        "web-0.log": f"boot redis://u:{password}@127.0.0.1:6379\n{SECRET_LINE}\n",
        "worker-0.log": "",  # nothing printed: left out (Slack refuses an empty file)
    }
    hosted.crashes = AnySource(f"web[0] exited 1\n{SECRET_LINE}")
    since = len(fake.calls)
    await slack.sender.command(f"submit rate-limiter {GIT}", user=LEARNER)
    done = await fake.wait_for(
        lambda c: c.method == "files.completeUploadExternal" and c.is_dm, within=20
    )
    await slack.settle()
    shared = json.loads(done.args["files"])
    assert sorted(f["title"] for f in shared) == ["build.log", "web-0.log"]
    uploaded = {fake.uploads[f["id"]] for f in shared}
    web = next(b for b in uploaded if b.startswith(b"boot"))
    assert SECRET_LINE.encode() in web and b"@127.0.0.1:6379" in web
    calls = fake.calls[since:]
    assert not [c for c in calls if password in c.dump]
    assert not [c for c in calls if c.method.startswith("files.") and c.answer.get("ok") is False]
    assert not [c for c in fake.public_calls() if SECRET_LINE in c.dump]  # never in a channel


async def test_other_files_and_oversize_ones_are_refused_without_a_download(
    slack: Workspace, hosted: ScriptedHosted
) -> None:
    fake = slack.fake
    fake.add_channel(DM)
    await slack.sender.event(file_share(fake.share("design.pdf", b"%PDF")))
    await fake.wait_for(lambda c: c.channel == DM and "attach a .zip or .tar.gz" in c.dump)
    big = fake.share("big.tar.gz", b"x", size=MAX_ARCHIVE_BYTES + 1)
    await slack.sender.event(file_share(big))
    await fake.wait_for(lambda c: c.channel == DM and "the limit is 25 MB" in c.dump)
    await slack.settle()
    assert fake.downloads == [] and hosted.prepared == []


async def test_a_git_url_in_the_slash_command_is_code(
    slack: Workspace, app: App, hosted: ScriptedHosted
) -> None:
    await slack.sender.command(f"submit rate-limiter {GIT}", user="U2")
    await slack.fake.wait_for(lambda c: "81/100" in c.dump, within=20)
    await slack.settle()
    assert hosted.prepared == [GIT]


async def test_an_admin_creates_a_hosted_only_contest(slack: Workspace, app: App) -> None:
    team = "T0HOSTED"
    community = await app.coach.communities.get("slack", team)
    community = await app.coach.communities.configure(community.id, channel_id="CCONTEST")
    start = (datetime.now(UTC) + timedelta(days=40)).strftime("%Y-%m-%dT09:00")
    end = (datetime.now(UTC) + timedelta(days=47)).strftime("%Y-%m-%dT09:00")
    await slack.sender.command(
        f"admin contest create rate-limiter {start} {end} hosted", user="UADMIN", team=team
    )
    await slack.fake.wait_for(lambda c: c.method == "response_url" and "hosted code only" in c.dump)
    (contest,) = await app.coach.contests.of(community)
    assert contest.hosted_only and contest.channel_id == "CCONTEST"
    await app.coach.contests.cancel(community, contest.id)


async def test_logs_uploads_the_full_logs_to_the_owners_dm_only(
    slack: Workspace, app: App, hosted: ScriptedHosted
) -> None:
    fake = slack.fake
    fake.add_channel(DM)
    hosted.data_dir = app.settings.data_dir
    hosted.logs = {"build.log": "Successfully installed aiohttp\n", "web-0.log": "listening\n"}
    await slack.sender.command(f"submit rate-limiter {GIT}", user=LEARNER)
    await fake.wait_for(lambda c: "81/100" in c.dump, within=20)
    await slack.settle()
    async with app.coach.store.session() as s:
        sub = await s.scalar(select(Submission).order_by(Submission.id.desc()))
    assert sub is not None and sub.logs_ref is not None
    since = len(fake.calls)
    await slack.sender.command(f"logs {sub.logs_ref}", user="U9")  # not theirs
    await fake.wait_for(lambda c: f"you have no code submission {sub.logs_ref}" in c.dump)
    await slack.sender.command("logs", user=LEARNER)  # their latest
    await fake.wait_for(lambda c: c.is_dm and "The logs of your" in c.dump, within=20)
    await slack.settle()
    [done] = [
        c
        for c in fake.calls[since:]
        if c.method == "files.completeUploadExternal" and "build.log" in c.dump
    ]
    assert done.channel == DM
    shared = json.loads(done.args["files"])
    assert sorted(f["title"] for f in shared) == ["build.log", "web-0.log"]
    assert {fake.uploads[f["id"]] for f in shared} == {
        b"Successfully installed aiohttp\n",
        b"listening\n",
    }
