"""Code submissions through the coach's queue (the hosted grader scripted: building and running
code is proven in tests/hosted and by one real grade in tests/hosted/test_coach_queue.py): what
counts as code, archives and their caps, logs only in private (the last lines, and the full logs
as files, masked and trimmed to fit a message), boards marking hosted scores, hosted-only
contests."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.commands import dispatch
from bot.core.errors import CoachError
from bot.core.logfiles import MESSAGE_BYTES, log_files
from bot.core.outbox import Actor
from bot.core.sources import (
    MAX_ARCHIVE_BYTES,
    Upload,
    UploadTooLarge,
    check_upload,
    classify,
    uploads_dir,
)
from bot.store import Submission
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    ScriptedHosted,
    coach_over,
    community,
    scripted_hosting,
)
from tests.support.outbox import RecordingOutbox

ADA, BOB = Actor("test", "1", "ada"), Actor("test", "2", "bob")
GIT = "https://github.com/ada/limiter"
SECRET_LINE = "Traceback: ModuleNotFoundError: No module named 'redis'"
PASSWORD = "pw-3f9a61c2d7"  # the bundle's password, as a learner's code might print it
RUN_LOG = f"listening\nconnecting to redis://u:{PASSWORD}@127.0.0.1:6379/0\n{SECRET_LINE}\n"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("https://github.com/ada/limiter", "code"),
        ("https://github.com/ada/limiter/", "code"),
        ("https://gitlab.com/group/sub/limiter", "code"),
        ("https://codeberg.org/ada/limiter", "code"),
        ("https://git.example.com/ada/limiter.git", "code"),
        ("https://github.com/ada", "url"),  # a profile, not a repository
        ("https://limiter.example.com", "url"),
        ("http://127.0.0.1:8080", "url"),
        ("http://github.com/ada/limiter", "url"),  # code is fetched over https only
    ],
)
def test_code_is_told_from_a_running_service(text: str, kind: str) -> None:
    assert classify(text).kind == kind


def test_paths_are_code_only_from_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "app.tar.gz").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert classify(str(tmp_path), local_paths=True).kind == "code"
    assert classify(str(tmp_path / "app.tar.gz"), local_paths=True).kind == "code"
    with pytest.raises(CoachError, match="not an http"):
        classify(str(tmp_path))  # from chat a server path is never read
    with pytest.raises(CoachError, match="neither a folder nor"):
        classify(str(tmp_path / "notes.txt"), local_paths=True)
    with pytest.raises(CoachError, match="is not an http"):
        classify("ftp://example.com/x", local_paths=True)
    with pytest.raises(CoachError, match="only public https"):
        classify("git@github.com:ada/limiter.git")


def test_attachments_are_refused_by_type_and_size(tmp_path: Path) -> None:
    assert check_upload("app.ZIP", 10) == ".zip"
    assert check_upload("app.tar.gz", MAX_ARCHIVE_BYTES) == ".tar.gz"
    with pytest.raises(CoachError, match="attach a .zip or .tar.gz"):
        check_upload("app.rar", 10)
    with pytest.raises(CoachError, match="the limit is 25 MB"):
        check_upload("app.zip", MAX_ARCHIVE_BYTES + 1)
    upload = Upload(tmp_path, "app.zip", cap=1000)  # a declared size can lie: bytes are counted
    upload.write(b"x" * 600)
    with pytest.raises(UploadTooLarge):
        upload.write(b"x" * 600)
    assert list(uploads_dir(tmp_path).iterdir()) == []  # the partial file is gone


async def test_a_git_url_is_built_hosted_graded_and_marked_on_the_board(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader(scores={GIT: 90, "http://127.0.0.1:9/bob": 95})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        hosted = ScriptedHosted(grader)
        scripted_hosting(coach, hosted)
        where = await community(coach)
        done = await coach.submit(ADA, "rate-limiter", GIT, RecordingOutbox(), community=where)
        assert (done.status, done.kind, done.source, done.hosted) == ("done", "code", GIT, True)
        assert done.logs_ref == "sub-1" and hosted.prepared == [GIT]
        url = await coach.submit(
            BOB, "rate-limiter", "http://127.0.0.1:9/bob", RecordingOutbox(), community=where
        )
        assert (url.kind, url.source, url.hosted) == ("url", None, False)

        board = await coach.leaderboard("rate-limiter", community=where)
        assert board.body.splitlines() == ["1. bob — 95/100 (1 try)", "2. ada — 90/100 ⚙ (1 try)"]
        assert "⚙ ran hosted, on equal resources" in board.footer
        assert "rate-limiter: 90/100 ⚙ passed" in (await coach.results(ADA)).body


async def test_a_failed_build_says_which_step_and_sends_its_logs_privately(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader()
    async with coach_over(home, clock=clock, grader=grader) as coach:
        hosted = ScriptedHosted(
            grader, broken_builds={GIT: f"build failed (exit 1)\n{SECRET_LINE}"}
        )
        scripted_hosting(coach, hosted)
        box = RecordingOutbox()
        with pytest.raises(CoachError, match="build failed: build failed \\(exit 1\\)"):
            await coach.submit(ADA, "rate-limiter", GIT, box, community=await community(coach))
        assert any(SECRET_LINE in m.body and "exit 1" in m.body for _, m in box.dms)
        assert box.posts == [] and SECRET_LINE not in box.public_text()
        async with coach.store.session() as s:
            sub = await s.scalar(select(Submission))
        assert sub is not None and sub.status == "error" and sub.error.startswith("build failed")
        assert "build failed" in (await coach.results(ADA)).body


async def test_a_crash_during_the_grade_reaches_only_the_learner(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader(scores={GIT: 40})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        hosted = ScriptedHosted(
            grader,
            crashes={GIT: f"web[0] exited 137\n{SECRET_LINE}"},
            data_dir=home,
            logs={"build.log": "Successfully installed redis\n", "web-0.log": RUN_LOG},
            secrets=(PASSWORD,),
        )
        scripted_hosting(coach, hosted)
        box = RecordingOutbox()
        done = await coach.submit(ADA, "rate-limiter", GIT, box, community=await community(coach))
        assert done.status == "done" and done.score == 40
        [crash] = [m for _, m in box.dms if "stopped during the grade" in m.title]
        assert SECRET_LINE in crash.body
        assert [f.name for f in crash.files] == ["build.log", "web-0.log"]  # the full logs
        assert crash.footer == "full logs attached, secrets masked: build.log, web-0.log"
        web = crash.files[1].read_text()
        assert "@127.0.0.1:6379" in web and SECRET_LINE in web and PASSWORD not in web
        assert box.posts, "the score card is still published"
        assert SECRET_LINE not in box.public_text()
        assert all(not m.files or "logs" not in m.title for _, _, m in box.posts)


def test_full_logs_over_a_message_keep_their_last_bytes_with_a_note(home: Path) -> None:
    logs = home / "submissions" / "sub-9" / "logs"
    logs.mkdir(parents=True)
    big = "".join(f"line {i} redis://u:{PASSWORD}@x\n" for i in range(200_000))  # ~6.4 MB
    for name in ("build.log", "web-0.log", "web-1.log"):
        (logs / name).write_text(big)
    (logs / "worker-0.log").write_text("")  # nothing printed: not attached (Slack refuses it)
    files = log_files(home, "sub-9", (PASSWORD,))
    assert [f.name for f in files] == ["build.log", "web-0.log", "web-1.log"]
    assert sum(f.stat().st_size for f in files) <= MESSAGE_BYTES
    text = files[1].read_text()
    first, second = text.splitlines()[:2]
    assert first.startswith("[first ") and "bytes cut: this file keeps the last" in first
    assert second.startswith("line ") and text.endswith("@x\n")
    assert text.splitlines()[-1].startswith("line 199999 redis://u:")
    assert PASSWORD not in text
    assert log_files(home, "sub-nothing") == []


async def test_with_dms_closed_logs_go_in_the_private_reply(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    async with coach_over(home, clock=clock, grader=grader) as coach:
        scripted_hosting(coach, ScriptedHosted(grader, broken_starts={GIT: SECRET_LINE}))
        box = RecordingOutbox(dms_closed=True)
        with pytest.raises(CoachError, match="start failed"):
            await coach.submit(ADA, "rate-limiter", GIT, box)
        assert any(SECRET_LINE in m.body for _, m in box.replies)
        assert SECRET_LINE not in box.public_text()


async def test_a_hosted_only_contest_ranks_code_and_says_a_url_is_not_ranked(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader(scores={GIT: 60, "http://127.0.0.1:9/bob": 99})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        scripted_hosting(coach, ScriptedHosted(grader))
        where = await community(coach)
        contest = await coach.contests.create(
            where,
            "rate-limiter",
            clock.now - timedelta(hours=1),
            clock.now + timedelta(days=1),
            created_by="admin",
            hosted_only=True,
        )
        bob = RecordingOutbox()
        url = await coach.submit(
            BOB, "rate-limiter", "http://127.0.0.1:9/bob", bob, community=where
        )
        assert url.status == "done" and url.score == 99  # graded as usual
        assert any("not ranked" in m.title for _, m in bob.replies)
        ada = RecordingOutbox()
        await coach.submit(ADA, "rate-limiter", GIT, ada, community=where)
        assert not any("not ranked" in m.title for _, m in ada.replies)

        standings = await coach.contests.standings(contest)
        assert [(e.name, e.score, e.hosted) for e in standings] == [("ada", 60, True)]
        board = await coach.leaderboard("rate-limiter", community=where)
        assert board.body.startswith("1. bob — 99/100")  # the leaderboard keeps every grade


async def test_an_archive_waits_in_the_data_dir_until_graded_even_across_a_restart(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader(scores={})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        upload = Upload(home, "limiter.tar.gz")
        upload.write(b"not read by the scripted builder")
        archive = upload.close()
        grader.gate(str(archive))  # the grade runs until the test opens it
        scripted_hosting(coach, ScriptedHosted(grader))
        task = asyncio.create_task(
            coach.submit(ADA, "rate-limiter", "limiter.tar.gz", RecordingOutbox(), archive=archive)
        )
        async with asyncio.timeout(5):
            while str(archive) not in grader.started:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    with pytest.raises(CoachError, match="restarting"):
        await task
    assert archive.exists()  # interrupted: kept for the resumed grade

    grader = ScriptedGrader(scores={str(archive): 77})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        scripted_hosting(coach, ScriptedHosted(grader))
        await coach.queue.resume()
        await coach.queue.idle()
        async with coach.store.session() as s:
            sub = await s.scalar(select(Submission))
        assert sub is not None and (sub.status, sub.score, sub.hosted) == ("done", 77, True)
        assert sub.url == "limiter.tar.gz" and not archive.exists()


async def test_a_refused_archive_is_removed(home: Path, clock: Clock) -> None:
    async with coach_over(home, clock=clock) as coach:
        scripted_hosting(coach, ScriptedHosted(ScriptedGrader()))
        upload = Upload(home, "limiter.zip")
        archive = upload.close()
        with pytest.raises(CoachError, match="no-such-challenge"):
            await coach.submit(
                ADA, "no-such-challenge", "limiter.zip", RecordingOutbox(), archive=archive
            )
        assert not archive.exists()


async def test_the_console_submits_a_folder_and_chat_cannot(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    repo = home / "my-limiter"
    repo.mkdir()
    (repo / "main.py").write_text("print('hi')\n")
    async with coach_over(home, clock=clock, grader=grader) as coach:
        hosted = ScriptedHosted(grader)
        scripted_hosting(coach, hosted)
        me = Actor("console", "me", "me")
        await dispatch(coach, me, f"submit rate-limiter {repo}", RecordingOutbox())
        assert hosted.prepared == [str(repo)]
        chat = RecordingOutbox()
        await dispatch(coach, ADA, f"submit rate-limiter {repo}", chat)
        assert hosted.prepared == [str(repo)]  # a chat learner never names a server path
        assert any("not an http(s) URL" in m.body for _, m in chat.replies)


async def test_a_resumed_grade_sends_its_logs_by_dm_and_never_to_the_channel(
    home: Path, clock: Clock
) -> None:
    channels = RecordingChannels()
    grader = ScriptedGrader()
    async with coach_over(home, clock=clock, grader=grader, channels=channels) as coach:
        scripted_hosting(coach, ScriptedHosted(grader, broken_starts={GIT: SECRET_LINE}))
        where = await community(coach)
        user = await coach.user(ADA)
        await coach.queue.add(  # as a restart finds it: nobody waits on it in this process
            Submission(
                user_id=user.id,
                challenge="rate-limiter",
                url=GIT,
                kind="code",
                source=GIT,
                seed=1,
                community_id=where.id,
                created_at=clock.now,
            )
        )
        await coach.queue.idle()
        assert [(who, SECRET_LINE in m.body) for who, m in channels.dms] == [(ADA.id, True)]
        assert not [p for p in channels.posts if SECRET_LINE in p.message.text()]


async def test_keep_is_recorded_for_code_and_refused_for_a_url(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader(scores={GIT: 80})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        scripted_hosting(coach, ScriptedHosted(grader))
        await dispatch(coach, ADA, f"submit rate-limiter {GIT} keep", RecordingOutbox())
        async with coach.store.session() as s:
            sub = await s.scalar(select(Submission))
        assert sub is not None and (sub.keep, sub.status, sub.kind) == (True, "done", "code")
        url = RecordingOutbox()
        await dispatch(coach, BOB, "submit rate-limiter http://127.0.0.1:9/bob keep", url)
        assert any("keep applies to code we run" in m.body for _, m in url.replies)
