"""The submission form: a modal with a challenge select and a URL input, and its validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.adapters.slack.blocks import truncate

CALLBACK_ID = "cruscible-submit"
CHALLENGE, URL = "challenge", "url"  # block_id and action_id of the two inputs
# https://api.slack.com/reference/block-kit/composition-objects#option: text ≤ 75 characters;
# https://api.slack.com/reference/block-kit/block-elements#static_select: ≤ 100 options
OPTION_TEXT_MAX = 75
OPTIONS_MAX = 100


@dataclass(frozen=True)
class Submitted:
    challenge: str | None
    url: str
    channel: str | None  # where `/cruscible submit` was typed: replies go there


def submit_modal(
    challenges: list[tuple[str, str]], selected: str | None, channel: str | None
) -> dict[str, Any]:
    """The modal for ``challenges`` (``(id, title)``), ``selected`` preselected when listed."""
    options = [
        {"text": {"type": "plain_text", "text": truncate(title, OPTION_TEXT_MAX)}, "value": cid}
        for cid, title in challenges[:OPTIONS_MAX]
    ]
    select: dict[str, Any] = {"type": "static_select", "action_id": CHALLENGE, "options": options}
    initial = next((o for o in options if o["value"] == selected), None)
    if initial is not None:
        select["initial_option"] = initial
    url_input = {
        "type": "plain_text_input",
        "action_id": URL,
        "placeholder": {
            "type": "plain_text",
            "text": "https://github.com/me/repo or https://my-service.example.com",
        },
    }
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Submit your work"},
        "submit": {"type": "plain_text", "text": "Grade it"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel": channel}),
        "blocks": [
            {
                "type": "input",
                "block_id": CHALLENGE,
                "label": {"type": "plain_text", "text": "Challenge"},
                "element": select,
            },
            {
                "type": "input",
                "block_id": URL,
                "label": {"type": "plain_text", "text": "Git URL or service URL"},
                "element": url_input,
                "hint": {
                    "type": "plain_text",
                    "text": "A public git URL: we build and run your code on equal resources. "
                    "Or where your service answers GET /healthz. Grading takes about a minute.",
                },
            },
        ],
    }


def read_submission(view: dict[str, Any]) -> Submitted:
    values = view.get("state", {}).get("values", {})
    option = values.get(CHALLENGE, {}).get(CHALLENGE, {}).get("selected_option") or {}
    url = values.get(URL, {}).get(URL, {}).get("value") or ""
    try:
        channel = json.loads(view.get("private_metadata") or "{}").get("channel")
    except (ValueError, AttributeError):
        channel = None
    return Submitted(option.get("value"), url.strip(), channel)


def errors(submitted: Submitted) -> dict[str, str]:
    """Per-block messages Slack shows under the inputs; empty when the form is fine."""
    found: dict[str, str] = {}
    if not submitted.challenge:
        found[CHALLENGE] = "Pick the challenge your service answers."
    parts = urlsplit(submitted.url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or " " in submitted.url:
        found[URL] = "Enter a public https:// git URL, or the http(s):// URL of your service."
    return found
