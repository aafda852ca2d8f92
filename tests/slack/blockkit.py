"""What Slack refuses in Block Kit, checked the way Slack checks it: an independent oracle for
the fake Slack (it does not import the renderer's constants). Each rule names its source.

``problems(blocks, surface)`` lists every broken rule (empty: Slack would accept the blocks).
"""

from __future__ import annotations

from typing import Any

BLOCKS_DOC = "https://api.slack.com/reference/block-kit/blocks"
ELEMENTS_DOC = "https://api.slack.com/reference/block-kit/block-elements"
OBJECTS_DOC = "https://api.slack.com/reference/block-kit/composition-objects"

# "blocks: An array of layout blocks … Maximum of 50 blocks" (messages); modals and Home tabs
# take 100: https://api.slack.com/reference/surfaces/views
MAX_BLOCKS = {"message": 50, "modal": 100, "home": 100}
SECTION_TEXT_MAX = 3000  # section: text, max 3000 characters — BLOCKS_DOC#section
SECTION_FIELDS_MAX = 10  # section: fields, max 10 items — BLOCKS_DOC#section
SECTION_FIELD_TEXT_MAX = 2000  # section: each field's text, max 2000 — BLOCKS_DOC#section
HEADER_TEXT_MAX = 150  # header: plain_text, max 150 characters — BLOCKS_DOC#header
CONTEXT_ELEMENTS_MAX = 10  # context: elements, max 10 items — BLOCKS_DOC#context
TEXT_OBJECT_MAX = 3000  # a text object's text, max 3000 characters — OBJECTS_DOC#text
ACTIONS_ELEMENTS_MAX = 25  # actions: elements, max 25 — BLOCKS_DOC#actions
BUTTON_TEXT_MAX = 75  # button: text, max 75 characters — ELEMENTS_DOC#button
ACTION_ID_MAX = 255  # any element's action_id, max 255 characters — ELEMENTS_DOC#button
BUTTON_VALUE_MAX = 2000  # button: value, max 2000 characters — ELEMENTS_DOC#button
BLOCK_ID_MAX = 255  # any block's block_id, max 255 characters — BLOCKS_DOC
OPTION_TEXT_MAX = 75  # an option's text, max 75 characters — OBJECTS_DOC#option
SELECT_OPTIONS_MAX = 100  # static_select: options, max 100 — ELEMENTS_DOC#static_select
TEXT_TYPES = {"plain_text", "mrkdwn"}


def problems(blocks: Any, surface: str = "message") -> list[str]:
    """Each reason Slack would answer ``invalid_blocks`` for ``blocks`` on ``surface``."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    found: list[str] = []
    if len(blocks) > MAX_BLOCKS[surface]:
        found.append(f"{len(blocks)} blocks in a {surface} (max {MAX_BLOCKS[surface]})")
    for i, block in enumerate(blocks):
        found += [f"block {i}: {p}" for p in _block(block)]
    return found


def _block(block: Any) -> list[str]:
    if not isinstance(block, dict) or "type" not in block:
        return ["not a block"]
    found: list[str] = []
    if len(str(block.get("block_id", ""))) > BLOCK_ID_MAX:
        found.append("block_id too long")
    kind = block["type"]
    if kind == "header":
        found += _text(block.get("text"), HEADER_TEXT_MAX, plain_only=True)
    elif kind == "section":
        fields = block.get("fields")
        if "text" not in block and not fields:
            found.append("section with neither text nor fields")
        if "text" in block:
            found += _text(block["text"], SECTION_TEXT_MAX)
        if fields is not None:
            if len(fields) > SECTION_FIELDS_MAX:
                found.append(f"{len(fields)} fields (max {SECTION_FIELDS_MAX})")
            for f in fields:
                found += _text(f, SECTION_FIELD_TEXT_MAX)
    elif kind == "context":
        elements = block.get("elements") or []
        if not elements or len(elements) > CONTEXT_ELEMENTS_MAX:
            found.append(f"context with {len(elements)} elements (1 to {CONTEXT_ELEMENTS_MAX})")
        for e in elements:
            if e.get("type") != "image":
                found += _text(e, TEXT_OBJECT_MAX)
    elif kind == "actions":
        elements = block.get("elements") or []
        if not elements or len(elements) > ACTIONS_ELEMENTS_MAX:
            found.append(f"actions with {len(elements)} elements (1 to {ACTIONS_ELEMENTS_MAX})")
        for e in elements:
            found += _element(e)
    elif kind == "input":
        found += _text(block.get("label"), 2000, plain_only=True)
        found += _element(block.get("element") or {})
    elif kind not in {"divider", "image"}:
        found.append(f"unknown block type {kind!r}")
    return found


def _element(e: dict[str, Any]) -> list[str]:
    found: list[str] = []
    if len(str(e.get("action_id", ""))) > ACTION_ID_MAX:
        found.append(f"action_id longer than {ACTION_ID_MAX}")
    if e.get("type") == "button":
        found += _text(e.get("text"), BUTTON_TEXT_MAX, plain_only=True)
        if len(str(e.get("value", ""))) > BUTTON_VALUE_MAX:
            found.append(f"button value longer than {BUTTON_VALUE_MAX}")
    elif e.get("type") == "static_select":
        options = e.get("options") or []
        if len(options) > SELECT_OPTIONS_MAX:
            found.append(f"{len(options)} options (max {SELECT_OPTIONS_MAX})")
        for o in options:
            found += _text(o.get("text"), OPTION_TEXT_MAX, plain_only=True)
    return found


def _text(obj: Any, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES:
        return ["not a text object"]
    if plain_only and obj["type"] != "plain_text":
        return ["must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return ["empty text"]
    if len(text) > limit:
        return [f"text of {len(text)} characters (max {limit})"]
    return []
