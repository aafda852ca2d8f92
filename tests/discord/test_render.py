"""Message → embeds within Discord's limits."""

from __future__ import annotations

from pathlib import Path

import discord

from bot.adapters.discord.render import (
    DESCRIPTION_MAX,
    TOTAL_MAX,
    progress_bar,
    render,
    split_markdown,
)
from bot.core.message import Field, Message, Tone


def paragraphs(chars: int) -> str:
    line = "A queue trades latency for smoothness; a token bucket trades burst for fairness.\n"
    return (line * (chars // len(line) + 1))[:chars]


def test_a_short_message_is_one_embed_with_inline_fields_and_tone_colour() -> None:
    msg = Message(
        title="Grace scored 87/100",
        body="**well done**",
        fields=[Field("Difficulty", "medium"), Field("Scale", "10k rps", inline=False)],
        tone=Tone.SUCCESS,
        footer="/submit",
    )
    (embed,) = render(msg).embeds
    assert embed.title == "Grace scored 87/100"
    assert embed.description == "**well done**"
    assert embed.colour == discord.Colour.green()
    assert [(f.name, f.value, f.inline) for f in embed.fields] == [
        ("Difficulty", "medium", True),
        ("Scale", "10k rps", False),
    ]
    assert embed.footer.text == "/submit"


def test_a_10000_char_discussion_is_attached_as_markdown() -> None:
    body = paragraphs(10_000)
    rendered = render(Message(title="Trade-offs: what your design paid", body=body))
    assert len(rendered.embeds) == 1
    assert sum(len(e) for e in rendered.embeds) <= TOTAL_MAX
    description = rendered.embeds[0].description or ""
    assert len(description) <= DESCRIPTION_MAX
    assert "trade-offs-what-your-design-paid.md" in description
    (attached,) = rendered.files
    assert attached.filename == "trade-offs-what-your-design-paid.md"
    assert attached.fp.read().decode() == body


def test_a_body_over_one_description_is_split_across_embeds() -> None:
    body = paragraphs(5_000)
    rendered = render(Message(title="Long", body=body, fields=[Field("a", "b")], footer="end"))
    first, second = rendered.embeds
    assert first.title == "Long" and second.title is None
    assert not first.fields and second.footer.text == "end" and len(second.fields) == 1
    assert (first.description or "") + "\n" + (second.description or "") == body
    assert not rendered.files


def test_limits_clip_title_and_fields() -> None:
    (embed,) = render(Message(title="t" * 300, fields=[Field("n", "v")] * 30)).embeds
    assert len(embed.title or "") == 256
    assert len(embed.fields) == 25
    rendered = render(Message(title="big", fields=[Field("n" * 300, "v" * 2000)] * 10))
    (embed,) = rendered.embeds
    assert len(embed.fields[0].name or "") == 256 and len(embed.fields[0].value or "") == 1024
    assert len(embed) <= TOTAL_MAX and 0 < len(embed.fields) < 10
    assert rendered.files[0].fp.read().decode().count("v" * 2000) == 10


def test_a_cut_inside_a_code_block_reopens_the_fence() -> None:
    text = "intro\n```env\n" + "KEY=value\n" * 300 + "```\noutro"
    chunks = split_markdown(text, 1000)
    assert len(chunks) > 1
    assert all(len(c) <= 1000 for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    assert chunks[1].startswith("```env\n")


def test_progress_draws_a_bar_and_a_plot_is_shown_in_the_embed(tmp_path: Path) -> None:
    assert progress_bar(0.5) == "`" + "█" * 10 + "░" * 10 + "` 50%"
    plot = tmp_path / "latency.png"
    plot.write_bytes(b"\x89PNG")
    rendered = render(Message(title="Grading…", body="load (50%)", progress=0.5, files=[plot]))
    (embed,) = rendered.embeds
    assert (embed.description or "").endswith("50%")
    assert embed.image.url == "attachment://latency.png"
    assert [f.filename for f in rendered.files] == ["latency.png"]
