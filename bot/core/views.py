"""Builds the coach's messages; the only place that decides what a learner reads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bot.core.message import Button, Field, Message, Tone
from bot.store import Publication, Submission
from challenges.catalog import Challenge
from grading.render import render_scorecard
from grading.report import Report
from grading.runner import overall_progress
from provisioning import Environment

DIFFICULTY = {1: "warm-up", 2: "easy", 3: "medium", 4: "hard", 5: "expert"}


def start_button(challenge_id: str) -> Button:
    return Button("Start", f"start:{challenge_id}", primary=True)


def tradeoffs_button(challenge_id: str) -> Button:
    return Button("Show trade-offs", f"tradeoffs:{challenge_id}")


def daily_post(challenge: Challenge, day: datetime | None = None) -> Message:
    s = challenge.spec
    when = f" — {day:%A %d %B}" if day else ""
    return Message(
        title=f"Today's challenge: {s.title}{when}",
        body=challenge.statement(),
        fields=[
            Field("Difficulty", DIFFICULTY[s.difficulty]),
            Field("Scale", s.scale.description),
            Field("Infrastructure", ", ".join(r.value for r in s.resources)),
        ],
        buttons=[start_button(s.id), tradeoffs_button(s.id)],
        footer=f"/submit {s.id} <url> when your service is up",
    )


def challenge_list(challenges: list[Challenge]) -> Message:
    lines = [
        f"- **{c.id}** — {c.spec.title} ({DIFFICULTY[c.spec.difficulty]}): {c.spec.summary}"
        for c in challenges
    ]
    return Message(title="Challenges", body="\n".join(lines))


def challenge_detail(challenge: Challenge) -> Message:
    msg = daily_post(challenge)
    msg.title = challenge.spec.title
    return msg


def provisioning(challenge_id: str) -> Message:
    return Message(
        title="Provisioning your environment…",
        body=f"Starting the infrastructure for **{challenge_id}**; the connection bundle "
        "will arrive by private message.",
    )


def bundle_dm(env: Environment) -> Message:
    left = env.expires_at - datetime.now(env.expires_at.tzinfo)
    return Message(
        title=f"Your environment {env.id} is ready",
        body=(
            "Connection bundle (keep it private; paste it into your service's `.env`):\n\n"
            f"```env\n{env.dotenv()}```\n"
            "Deploy your service with these variables, then submit its URL."
        ),
        fields=[
            Field("Expires", f"in {_duration(left.total_seconds())}"),
            Field("Resources", ", ".join(r.value for r in env.resources)),
        ],
        tone=Tone.SUCCESS,
    )


def bundle_sent(env: Environment) -> Message:
    return Message(
        title=f"Environment {env.id} is ready",
        body="Your connection bundle is in your private messages.",
        tone=Tone.SUCCESS,
    )


def environments(envs: list[Environment]) -> Message:
    if not envs:
        return Message(title="Your environments", body="You have no live environment.")
    now = datetime.now(envs[0].expires_at.tzinfo)
    rows = [
        f"- **{e.id}** ({e.label or 'custom'}): {', '.join(r.value for r in e.resources)} — "
        f"expires in {_duration((e.expires_at - now).total_seconds())}"
        for e in envs
    ]
    return Message(title="Your environments", body="\n".join(rows))


def grading_progress(challenge_id: str, phase: str, fraction: float) -> Message:
    done = overall_progress(phase, fraction) if phase != "done" else 1.0
    return Message(
        title=f"Grading {challenge_id}…",
        body=f"{phase} ({done:.0%})" if phase != "done" else "graded",
        progress=done,
    )


def queued(challenge_id: str, position: int | None) -> Message:
    place = f"queued — position {position}" if position else "starting"
    return Message(title=f"Grading {challenge_id}…", body=place, progress=0.0)


def cancelled(challenge_id: str, sub_id: int | None = None) -> Message:
    which = f"#{sub_id} " if sub_id else ""
    return Message(
        title=f"Submission {which}cancelled",
        body=f"Your {challenge_id} grade will not run. Submit again whenever you are ready.",
    )


def restarted(sub: Submission, max_attempts: int) -> Message:
    return Message(
        title=f"Grading {sub.challenge}…",
        body=f"The worker grading submission #{sub.id} stopped; your grade restarted from the "
        f"beginning on another worker (start {sub.attempts} of {max_attempts}).",
        progress=0.0,
        tone=Tone.WARNING,
    )


def interrupted(sub: Submission) -> Message:
    return Message(
        title=f"Your {sub.challenge} grade was interrupted",
        body=f"Submission #{sub.id} ({sub.url}) was interrupted by restarts of the bot "
        f"{sub.attempts} times; it is not graded. Submit again when you are ready.",
        tone=Tone.WARNING,
    )


def scorecard(report: Report, learner: str, plot: Path | None = None) -> Message:
    tone = Tone.SUCCESS if report.passed else Tone.WARNING
    return Message(
        title=f"{learner} scored {report.score}/100 on {report.challenge}"
        + (" — passed" if report.passed else " — not yet"),
        body=render_scorecard(report),
        files=[plot] if plot else [],
        tone=tone,
    )


def discussion(report: Report) -> Message:
    return Message(title="Trade-offs: what your design paid for its choice", body=report.discussion)


def full_report(markdown: str, files: list[Path]) -> Message:
    return Message(title="Your full grade report", body=markdown, files=files)


def cannot_grade(url: str, reason: str) -> Message:
    return Message(title=f"Could not grade {url}", body=reason, tone=Tone.ERROR)


def error(text: str) -> Message:
    return Message(title="That did not work", body=text, tone=Tone.ERROR)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def private_report(
    markdown: str, files: list[Path], *, channel_error: str | None = None, later: bool = False
) -> Message:
    """The full report for the learner alone; says why the score card is not in the channel."""
    msg = full_report(markdown, files)
    if channel_error:
        when = "it will be posted when the platform accepts it" if later else "it is only here"
        msg.fields.append(
            Field("Not posted in the channel", f"{channel_error} — {when}", inline=False)
        )
        msg.tone = Tone.WARNING
    return msg


def publication_note(pub: Publication | None) -> str:
    """What ``results`` adds to a grade whose publication hit a refusal (empty otherwise)."""
    if pub is None:
        return ""
    parts = []
    if pub.channel_error and pub.card_ref in (None, "skipped"):
        parts.append(f"not posted in the channel: {pub.channel_error}")
    if pub.note:
        parts.append(f"report {pub.note}")
    return "".join(f" — {p}" for p in parts)


def hosted_logs(
    challenge_id: str, what: str, text: str, files: list[Path] | None = None
) -> Message:
    """The build or run logs of the learner's hosted code: the last 40 lines in the message and
    the full logs as ``files`` (``bot.core.logfiles``; secrets already masked in both): sent
    privately only (DM, else the private reply), never to a channel."""
    tail = "\n".join(text.strip().splitlines()[-40:]) or "(no output)"
    names = ", ".join(f.name for f in files or [])
    return Message(
        title=f"Your {challenge_id} code: {what}",
        body=f"```\n{tail}\n```",
        files=list(files or []),
        footer=f"full logs attached, secrets masked: {names}" if names else "",
        tone=Tone.WARNING,
    )


def full_logs(challenge_id: str, logs_ref: str, files: list[Path]) -> Message:
    """The full logs of a hosted submission, asked for by its owner (``logs``)."""
    return Message(
        title=f"The logs of your {challenge_id} code ({logs_ref})",
        body="Secrets are masked; a long log keeps its last part."
        if files
        else "Nothing was logged (no build, and no output).",
        files=files,
    )


def kept(challenge_id: str, url: str, env: Environment) -> Message:
    """Hosted code the learner asked to keep: where it answers and until when."""
    return Message(
        title=f"Your {challenge_id} code keeps running",
        body=f"It answers at {url} on the bot's host until your environment {env.id} is torn "
        f"down: at {env.expires_at:%H:%M} UTC at the latest (its TTL), or when you destroy it.",
    )


def not_ranked(contest_id: int, challenge_id: str) -> Message:
    """A URL submission during a contest that ranks hosted code only."""
    return Message(
        title="Graded, but not ranked in the contest",
        body=f"Contest #{contest_id} ({challenge_id}) ranks code we run on equal resources "
        "only: this URL is graded as usual and counts on the leaderboard, not in the contest. "
        "Submit your code (a .zip/.tar.gz or a public git URL) to be ranked.",
        tone=Tone.WARNING,
    )
