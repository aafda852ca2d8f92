"""Block Kit rendering, the form's validation, the streak and the configuration, without Slack."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from bot.adapters.slack import modal
from bot.adapters.slack.app import BOT_SCOPES
from bot.adapters.slack.blocks import (
    CUT,
    HEADER_MAX,
    MAX_BLOCKS,
    SECTION_MAX,
    SLASH,
    TEXT_BUDGET,
    fallback_text,
    mrkdwn,
    split_text,
    to_blocks,
)
from bot.adapters.slack.commands import unescape
from bot.adapters.slack.config import SlackConfig
from bot.adapters.slack.home import streak, undelivered_message
from bot.adapters.slack.lifecycle import Once, delivery_key
from bot.adapters.slack.main import EVENTS_PATH
from bot.core.message import Button, Field, Message, Tone
from bot.store import Publication, Submission
from tests.slack import blockkit


def test_markdown_becomes_mrkdwn() -> None:
    text = mrkdwn(
        "## Score **card**\n"
        "Some **bold**, *italic*, ~~gone~~, `a **b**` and [docs](https://x.test/?a=1&b=2) a<b\n"
        "- one\n"
        "```env\nDATABASE_URL=postgresql://u:p@h:5/db\n```\n"
        r"p99 \< 10 ms, see ![plot](latency.png); then /submit rate-limiter URL"
    )
    assert text.splitlines() == [
        "*Score card*",
        "Some *bold*, _italic_, ~gone~, `a **b**` and <https://x.test/?a=1&amp;b=2|docs> a&lt;b",
        "• one",
        "```",
        "DATABASE_URL=postgresql://u:p@h:5/db",
        "```",
        "p99 &lt; 10 ms, see plot (attached: latency.png); then /cruscible submit rate-limiter URL",
    ]


def test_tables_become_lines() -> None:
    table = "| Check | Status |\n| --- | :---: |\n| `a`<br>why | **pass** |\n"
    assert mrkdwn(table).splitlines() == ["*Check · Status*", "• `a` — why · *pass*"]


def test_long_text_is_split_with_fences_reopened() -> None:
    code = "\n".join(f"line {i:05d} " + "x" * 60 for i in range(120))
    text = "intro\n```\n" + code + "\n```\noutro"
    chunks = split_text(text)
    assert len(chunks) > 1
    assert all(len(c) <= SECTION_MAX for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    joined = "\n".join(chunks)
    assert all(f"line {i:05d}" in joined for i in range(120)) and joined.endswith("outro")


def test_a_message_fits_block_kit_limits() -> None:
    msg = Message(
        title="T" * 400,
        body="\n\n".join("word " * 700 for _ in range(80)),
        fields=[Field(f"f{i}", "v" * 3000) for i in range(12)] + [Field("wide", "w", inline=False)],
        buttons=[Button("Start", "start:rate-limiter", primary=True), Button("Why", "tradeoffs:x")],
        tone=Tone.WARNING,
        footer="footer",
        progress=0.5,
    )
    blocks = to_blocks(msg)
    assert len(blocks) <= MAX_BLOCKS
    texts = [b.get("text", {}).get("text", "") for b in blocks if b["type"] == "section"]
    assert sum(map(len, texts)) <= TEXT_BUDGET  # msg_blocks_too_long is never risked
    assert blocks[-3]["elements"][0]["text"] == CUT
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= HEADER_MAX
    assert blocks[0]["text"]["text"].startswith(":warning:")
    assert "50%" in blocks[1]["elements"][0]["text"]
    for b in blocks:
        if b["type"] == "section":
            assert len(b.get("text", {}).get("text", "")) <= SECTION_MAX
            assert all(len(f["text"]) <= 2000 for f in b.get("fields", []))
            assert len(b.get("fields", [])) <= 10
    actions = blocks[-2]
    assert [e["action_id"] for e in actions["elements"]] == ["start:rate-limiter", "tradeoffs:x"]
    assert actions["elements"][0]["style"] == "primary"
    assert blocks[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "footer"}]}
    assert blockkit.problems(blocks) == []


def test_a_message_of_many_blocks_is_cut_at_fifty() -> None:
    msg = Message(
        title="Checks", fields=[Field(f"check {i}", "pass", inline=False) for i in range(80)]
    )
    blocks = to_blocks(msg)
    assert len(blocks) == MAX_BLOCKS and blocks[-1]["elements"][0]["text"] == CUT
    assert blockkit.problems(blocks) == []


def test_what_slack_would_refuse_is_never_rendered() -> None:
    buttons = [Button(f"Option {i} " + "x" * 80, f"pick:{i}") for i in range(30)]
    buttons.append(Button("Too long an id", "start:" + "y" * 300))
    msg = Message(
        title="",
        body="x" * 9000,
        fields=[Field("n" * 2500, "v" * 2500, inline=False)],
        buttons=buttons,
        footer="f" * 5000,
    )
    blocks = to_blocks(msg)
    assert blockkit.problems(blocks) == []
    actions = [b for b in blocks if b["type"] == "actions"]
    ids = [e["action_id"] for a in actions for e in a["elements"]]
    assert [len(a["elements"]) for a in actions] == [25, 5]
    assert ids == [f"pick:{i}" for i in range(30)]  # the unusable button is left out
    assert len(fallback_text(Message(title="t" * 50_000))) <= 40_000
    # and the oracle does refuse what breaks a rule
    assert blockkit.problems(
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    )
    assert blockkit.problems([{"type": "divider"}] * 51)
    assert not blockkit.problems([{"type": "divider"}] * 100, "home")


def test_the_form_refuses_what_cannot_be_graded() -> None:
    ok = modal.Submitted("rate-limiter", "https://svc.example.com", "C1")
    assert modal.errors(ok) == {}
    assert set(modal.errors(modal.Submitted(None, "http://", None))) == {"challenge", "url"}
    for url in ["", "ftp://x", "example.com", "http:// spaced.example"]:
        assert "url" in modal.errors(modal.Submitted("rate-limiter", url, None))


def test_the_form_reads_back_what_it_rendered() -> None:
    view = modal.submit_modal([("rate-limiter", "Design a rate limiter")], "rate-limiter", "C9")
    selected = view["blocks"][0]["element"]["initial_option"]
    view["state"] = {
        "values": {
            "challenge": {"challenge": {"selected_option": selected}},
            "url": {"url": {"value": " http://127.0.0.1:8080 "}},
        }
    }
    assert modal.read_submission(view) == modal.Submitted(
        "rate-limiter", "http://127.0.0.1:8080", "C9"
    )


def test_streak_counts_consecutive_days_up_to_today_or_yesterday() -> None:
    today = date(2026, 3, 10)
    days = {today - timedelta(days=n) for n in (1, 2, 3, 5)}
    assert streak(days, today) == 3
    assert streak(days | {today}, today) == 4
    assert streak({today - timedelta(days=2)}, today) == 0
    assert streak(set(), today) == 0


def test_slack_escapes_are_undone() -> None:
    assert unescape("admin channel <#C123|daily>") == "admin channel C123"
    assert unescape("submit x <http://h:1/a?b=1&amp;c=2>") == "submit x http://h:1/a?b=1&c=2"
    assert unescape("submit x <https://h|h> &lt;") == "submit x https://h <"


ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}


@pytest.mark.parametrize(
    ("env", "socket_mode", "reason"),
    [
        ({"SLACK_SIGNING_SECRET": "s"}, False, "SLACK_BOT_TOKEN is not set"),
        ({**ENV, "SLACK_BOT_TOKEN": "xoxp-1"}, False, "must be a bot token"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, False, "SLACK_SIGNING_SECRET is not set"),
        (ENV, True, "SLACK_APP_TOKEN is not set"),
        ({**ENV, "SLACK_APP_TOKEN": "xoxb-2"}, True, "app-level token"),
        ({**ENV, "SLACK_CLIENT_ID": "1.2"}, False, "go together"),
        ({**ENV, "SLACK_API_URL": "slack.test"}, False, "not an http(s) URL"),
    ],
)
def test_bad_configuration_is_one_line(env: dict[str, str], socket_mode: bool, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        SlackConfig.from_env(env, socket_mode=socket_mode)
    assert "\n" not in str(caught.value)


def test_configuration_modes() -> None:
    single = SlackConfig.from_env(
        {**ENV, "SLACK_API_URL": "http://127.0.0.1:1/api"}, socket_mode=False
    )
    assert (single.bot_token, single.oauth, single.api_url) == (
        "xoxb-1",
        False,
        "http://127.0.0.1:1/api/",
    )
    oauth = {"SLACK_SIGNING_SECRET": "s", "SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c"}
    multi = SlackConfig.from_env(oauth, socket_mode=False)
    assert multi.oauth and multi.bot_token is None
    socket = SlackConfig.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, socket_mode=True
    )
    assert socket.app_token == "xapp-1" and socket.signing_secret is None


def test_the_manifest_matches_the_app() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[2] / "manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == SLASH and command["url"].endswith(EVENTS_PATH)
    assert manifest["oauth_config"]["scopes"]["bot"] == BOT_SCOPES
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert events == ["app_home_opened", "message.im", "app_uninstalled", "tokens_revoked"]
    assert manifest["settings"]["interactivity"]["request_url"].endswith(EVENTS_PATH)


def test_app_home_lists_the_results_no_route_delivered() -> None:
    graded = [
        Submission(id=7, challenge="rate-limiter", score=88, passed=True),
        Submission(id=8, challenge="url-shortener", score=40, passed=False),
    ]
    notes = {
        7: Publication(
            submission_id=7,
            card_ref="skipped",
            channel_error="#daily is archived",
            note="not delivered: direct messages from Cruscible are closed for this member",
        ),
        8: Publication(submission_id=8, card_ref="C1/1.2", channel_error=None, note=None),
    }
    msg = undelivered_message(graded, notes)
    assert msg is not None and msg.title == "Results I could not deliver"
    (row, *_) = msg.body.splitlines()
    assert row.startswith("**rate-limiter** #7: 88/100 passed")
    assert "#daily is archived" in row and "messages from Cruscible are closed" in row
    assert "url-shortener" not in msg.body  # delivered: nothing to say
    assert undelivered_message(graded, {8: notes[8]}) is None
    assert blockkit.problems(to_blocks(msg), "home") == []


def test_a_delivery_is_handled_once_within_the_memory() -> None:
    once = Once(remember_s=60, limit=2)
    assert once.first("event:Ev1") and not once.first("event:Ev1")
    assert once.first("event:Ev2") and once.first("event:Ev3")  # the oldest is forgotten
    assert once.first("event:Ev1")
    event = {"type": "event_callback", "event_id": "Ev9", "event": {}}
    assert delivery_key(event) == "event:Ev9"
    assert delivery_key({"command": "/cruscible", "trigger_id": "t1"}) == "command:t1"
    assert delivery_key({"type": "block_actions", "trigger_id": "t2"}) is None
