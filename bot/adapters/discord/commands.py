"""The slash commands: one group per area, like cogs; each handler is one coach use-case."""

from __future__ import annotations

import logging
import zoneinfo
from datetime import UTC, datetime
from typing import Literal

import discord
from discord import app_commands

from bot.adapters.discord.failures import SETUP, missing
from bot.adapters.discord.outbox import message_ref, parse_ref
from bot.adapters.discord.render import clip, render
from bot.adapters.discord.turn import Turn, actor_of, local_day, turns_of
from bot.adapters.discord.uploads import download
from bot.adapters.discord.views import SubmitModal
from bot.core import views
from bot.core.communities import settings_message
from bot.core.contests import contest_message, parse_local, standings_message
from bot.core.errors import CoachError
from bot.core.message import Message
from bot.store import Community, Contest

log = logging.getLogger(__name__)

Choices = list[app_commands.Choice[str]]
CHOICES_MAX = 25


# -- autocompletion ----------------------------------------------------------------------------
async def challenge_ids(interaction: discord.Interaction, current: str) -> Choices:
    catalog = turns_of(interaction).coach.catalog
    return [
        app_commands.Choice(name=clip(f"{c.id} — {c.spec.title}", 100), value=c.id)
        for c in catalog
        if current.lower() in c.id
    ][:CHOICES_MAX]


async def environment_ids(interaction: discord.Interaction, current: str) -> Choices:
    envs = await turns_of(interaction).coach.environments(actor_of(interaction.user))
    return [
        app_commands.Choice(name=f"{e.id} ({e.label or 'custom'})", value=e.id)
        for e in envs
        if current.lower() in e.id
    ][:CHOICES_MAX]


async def timezones(interaction: discord.Interaction, current: str) -> Choices:
    names = sorted(z for z in zoneinfo.available_timezones() if current.lower() in z.lower())
    return [app_commands.Choice(name=z, value=z) for z in names[:CHOICES_MAX]]


async def todays(t: Turn, challenge: str | None) -> tuple[str, str | None]:
    """The challenge meant (today's by default) and the thread under its daily post, if any."""
    post = None
    day = datetime.now(UTC).date()
    if t.community is not None:
        day = local_day(t.community)
        post = await t.coach.communities.daily_post(t.community.id, day)
    if challenge is None:
        challenge = post.challenge if post else t.coach.catalog.for_day(day).id
    if post and post.challenge == challenge and post.message_ref:
        return challenge, message_ref(*parse_ref(post.message_ref, int(post.channel_id)))
    return challenge, None


def here(t: Turn) -> Community:
    assert t.community is not None  # guild-only commands
    return t.community


async def contest_numbered(t: Turn, number: int | None) -> Contest:
    """Contest ``number`` of this guild, or its current one."""
    community = here(t)
    if number is None:
        contest = await t.coach.contests.current(community)
    else:
        contest = await t.coach.contests.get(number)
    if contest is None or contest.community_id != community.id:
        raise CoachError("no such contest here" if number else "no contest here yet")
    return contest


# -- /challenge ----------------------------------------------------------------------------
class ChallengeCommands(
    app_commands.Group, name="challenge", description="The challenges", guild_only=True
):
    @app_commands.command(description="Today's challenge")
    async def today(self, interaction: discord.Interaction) -> None:
        async def use(t: Turn) -> None:
            await t.out.reply(t.coach.today(local_day(t.community) if t.community else None))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(name="list", description="Every challenge")
    async def list_(self, interaction: discord.Interaction) -> None:
        await turns_of(interaction).run(
            interaction, lambda t: t.out.reply(t.coach.list_challenges())
        )

    @app_commands.command(description="One challenge in full")
    @app_commands.describe(challenge="challenge id")
    @app_commands.autocomplete(challenge=challenge_ids)
    async def show(self, interaction: discord.Interaction, challenge: str) -> None:
        await turns_of(interaction).run(interaction, lambda t: t.out.reply(t.coach.show(challenge)))


# -- /env ----------------------------------------------------------------------------------
class EnvCommands(
    app_commands.Group, name="env", description="Your private infrastructure", guild_only=True
):
    @app_commands.command(description="Start the infrastructure of a challenge (bundle by DM)")
    @app_commands.describe(challenge="challenge id")
    @app_commands.autocomplete(challenge=challenge_ids)
    async def provision(self, interaction: discord.Interaction, challenge: str) -> None:
        await turns_of(interaction).run(
            interaction, lambda t: t.coach.provision(t.actor, challenge, t.out)
        )

    @app_commands.command(description="Your live environments")
    async def status(self, interaction: discord.Interaction) -> None:
        async def use(t: Turn) -> None:
            await t.out.reply(await t.coach.env_status(t.actor))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(description="Give an environment more time")
    @app_commands.describe(environment="environment id")
    @app_commands.autocomplete(environment=environment_ids)
    async def extend(self, interaction: discord.Interaction, environment: str) -> None:
        async def use(t: Turn) -> None:
            await t.out.reply(await t.coach.env_extend(t.actor, environment))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(description="Tear an environment down now")
    @app_commands.describe(environment="environment id")
    @app_commands.autocomplete(environment=environment_ids)
    async def destroy(self, interaction: discord.Interaction, environment: str) -> None:
        async def use(t: Turn) -> None:
            await t.out.reply(await t.coach.env_destroy(t.actor, environment))

        await turns_of(interaction).run(interaction, use)


# -- /admin ----------------------------------------------------------------------------------
def lacking_in(channel: discord.abc.GuildChannel) -> list[str]:
    """What the bot lacks in ``channel`` to post the daily post and the results there (from the
    gateway's roles and overwrites; discord.py's ``permissions_for``)."""
    me = channel.guild.me
    return missing(channel, me, SETUP) if me is not None else []


async def refuse_channel(channel: discord.abc.GuildChannel, lacking: list[str]) -> None:
    raise CoachError(
        f"the bot lacks {', '.join(lacking)} in #{channel.name}: grant "
        f"{'it' if len(lacking) == 1 else 'them'} to the bot (or its role) there, then set the "
        "channel again"
    )


def require_manage_guild(interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None or not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


class AdminCommands(
    app_commands.Group,
    name="admin",
    description="Configure Cruscible here",
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),  # hides it; the check enforces
):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Enforced here, whatever the server did with the command's default permissions."""
        return require_manage_guild(interaction)

    @staticmethod
    async def _configure(interaction: discord.Interaction, **settings: str) -> None:
        async def use(t: Turn) -> None:
            assert t.community is not None  # guild-only commands
            if settings:
                community = await t.coach.communities.configure(t.community.id, **settings)
            else:
                community = t.community
            await t.out.reply(settings_message(community))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(description="The channel of the daily post and the results")
    @app_commands.describe(channel="a text channel the bot can post in")
    async def channel(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        lacking = lacking_in(channel)
        if lacking:
            await turns_of(interaction).run(interaction, lambda t: refuse_channel(channel, lacking))
            return
        await self._configure(interaction, channel_id=str(channel.id))

    @app_commands.command(name="post-time", description="When the daily post goes out (HH:MM)")
    @app_commands.describe(time="24-hour local time, e.g. 09:00")
    async def post_time(self, interaction: discord.Interaction, time: str) -> None:
        await self._configure(interaction, post_time=time)

    @app_commands.command(description="The timezone of the post time")
    @app_commands.describe(timezone="an IANA name, e.g. Europe/Paris")
    @app_commands.autocomplete(timezone=timezones)
    async def timezone(self, interaction: discord.Interaction, timezone: str) -> None:
        await self._configure(interaction, timezone=timezone)

    @app_commands.command(description="The role pinged by the daily post (none: no ping)")
    @app_commands.describe(role="leave empty to stop pinging")
    async def role(
        self, interaction: discord.Interaction, role: discord.Role | None = None
    ) -> None:
        await self._configure(interaction, ping_role=str(role.id) if role else "")

    @app_commands.command(description="The current settings")
    async def show(self, interaction: discord.Interaction) -> None:
        await self._configure(interaction)

    @app_commands.command(description="One self-updating leaderboard message in the channel")
    @app_commands.describe(board="all (default), a challenge id, or contest:N")
    async def leaderboard(self, interaction: discord.Interaction, board: str = "all") -> None:
        async def use(t: Turn) -> None:
            kind = board if board == "all" or ":" in board else f"challenge:{board}"
            await t.coach.boards.place(here(t), kind)
            await t.out.reply(Message(title="Leaderboard placed", body="It updates itself."))

        await turns_of(interaction).run(interaction, use)


class AdminContestCommands(app_commands.Group, name="contest", description="Weekly contests"):
    """``/admin contest …`` (discord.py checks a nested group's own ``interaction_check``)."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return require_manage_guild(interaction)

    @app_commands.command(description="Create a contest (times in the server's timezone)")
    @app_commands.describe(
        challenge="challenge id",
        start="e.g. 2026-11-30T09:00",
        end="e.g. 2026-12-07T09:00",
        channel="where it is announced (the Cruscible channel by default)",
        hosted_only="rank only code we build and run on equal resources (URLs are not ranked)",
    )
    @app_commands.autocomplete(challenge=challenge_ids)
    async def create(
        self,
        interaction: discord.Interaction,
        challenge: str,
        start: str,
        end: str,
        channel: discord.TextChannel | None = None,
        hosted_only: bool = False,
    ) -> None:
        async def use(t: Turn) -> None:
            community = here(t)
            contest = await t.coach.contests.create(
                community,
                challenge,
                parse_local(start, community.timezone),
                parse_local(end, community.timezone),
                created_by=t.actor.id,
                channel_id=str(channel.id) if channel else None,
                hosted_only=hosted_only,
            )
            await t.out.reply(contest_message(contest, [], t.coach.clock()))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(name="list", description="This server's contests")
    async def list_(self, interaction: discord.Interaction) -> None:
        async def use(t: Turn) -> None:
            contests = await t.coach.contests.of(here(t))
            lines = [
                f"#{c.id} {c.challenge}: {c.starts_at:%Y-%m-%d %H:%M} → "
                f"{c.ends_at:%Y-%m-%d %H:%M} UTC"
                for c in contests
            ]
            await t.out.reply(Message(title="Contests", body="\n".join(lines) or "None yet."))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(description="Cancel a contest before it closes")
    @app_commands.describe(number="the contest's number")
    async def cancel(self, interaction: discord.Interaction, number: int) -> None:
        async def use(t: Turn) -> None:
            contest = await t.coach.contests.cancel(here(t), number)
            await t.out.reply(Message(title=f"Contest #{contest.id} cancelled"))

        await turns_of(interaction).run(interaction, use)


# -- /contest --------------------------------------------------------------------------------
class ContestCommands(
    app_commands.Group, name="contest", description="This week's contest", guild_only=True
):
    @app_commands.command(description="The current (or next) contest and its standings")
    async def show(self, interaction: discord.Interaction) -> None:
        async def use(t: Turn) -> None:
            contest = await contest_numbered(t, None)
            entries = await t.coach.contests.standings(contest)
            await t.out.reply(contest_message(contest, entries, t.coach.clock()))

        await turns_of(interaction).run(interaction, use)

    @app_commands.command(description="A contest's standings (the current one by default)")
    @app_commands.describe(number="the contest's number")
    async def standings(self, interaction: discord.Interaction, number: int | None = None) -> None:
        async def use(t: Turn) -> None:
            contest = await contest_numbered(t, number)
            entries = await t.coach.contests.standings(contest)
            final = contest.standings_at is not None
            await t.out.reply(standings_message(contest, entries, final=final))

        await turns_of(interaction).run(interaction, use)


# -- learner commands ------------------------------------------------------------------------
@app_commands.command(description="Grade your code (an archive or a git URL) or running service")
@app_commands.describe(
    url="a public https git URL of your code, or your running service's URL (a form opens "
    "without it or a file)",
    challenge="today's by default",
    code="a .zip or .tar.gz of your code: we build and run it on equal resources",
    keep="keep your code running after the grade, until your environment's TTL",
)
@app_commands.autocomplete(challenge=challenge_ids)
@app_commands.guild_only()
async def submit(
    interaction: discord.Interaction,
    url: str | None = None,
    challenge: str | None = None,
    code: discord.Attachment | None = None,
    keep: bool = False,
) -> None:
    async def grade(i: discord.Interaction, link: str) -> None:
        async def use(t: Turn) -> None:
            cid, thread = await todays(t, challenge)
            archive = None
            if code is not None:  # downloaded (capped) after the defer: it may take a while
                archive = await download(code, t.coach.settings.data_dir)
            await t.coach.submit(
                t.actor,
                cid,
                code.filename if code is not None else link,
                t.out,
                thread=thread,
                community=t.community,
                archive=archive,
                keep=keep,
            )

        await turns_of(i).run(i, use)

    if code is not None:
        if url is not None:
            await interaction.response.send_message(
                "Attach your code or give a URL, not both.", ephemeral=True
            )
            return
        await grade(interaction, code.filename)
    elif url is None:
        await interaction.response.send_modal(SubmitModal(challenge or "today's challenge", grade))
    else:
        await grade(interaction, url)


@app_commands.command(description="Your latest results")
@app_commands.guild_only()
async def results(interaction: discord.Interaction) -> None:
    async def use(t: Turn) -> None:
        await t.out.reply(await t.coach.results(t.actor))

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="The full logs of your code, by DM")
@app_commands.describe(submission="its id (sub-…); your latest by default")
@app_commands.guild_only()
async def logs(interaction: discord.Interaction, submission: str | None = None) -> None:
    async def use(t: Turn) -> None:
        await t.coach.send_logs(t.actor, submission, t.out)

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="The best scores")
@app_commands.describe(challenge="all challenges by default")
@app_commands.autocomplete(challenge=challenge_ids)
@app_commands.guild_only()
async def leaderboard(interaction: discord.Interaction, challenge: str | None = None) -> None:
    async def use(t: Turn) -> None:
        await t.out.reply(await t.coach.leaderboard(challenge, community=t.community))

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="The trade-offs of your latest design (or the reference ones)")
@app_commands.describe(challenge="today's by default")
@app_commands.autocomplete(challenge=challenge_ids)
@app_commands.guild_only()
async def tradeoffs(interaction: discord.Interaction, challenge: str | None = None) -> None:
    async def use(t: Turn) -> None:
        cid, _ = await todays(t, challenge)
        await t.out.reply(await t.coach.tradeoffs(t.actor, cid))

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="Cancel your queued or running grade")
@app_commands.guild_only()
async def cancel(interaction: discord.Interaction) -> None:
    async def use(t: Turn) -> None:
        await t.out.reply(await t.coach.cancel(t.actor))

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="Hide you from (on) or show you on (off) public leaderboards")
@app_commands.describe(state="on: hidden; off: shown")
async def privacy(interaction: discord.Interaction, state: Literal["on", "off"]) -> None:
    async def use(t: Turn) -> None:
        await t.out.reply(await t.coach.set_privacy(t.actor, public=state == "off"))

    await turns_of(interaction).run(interaction, use)


@app_commands.command(description="Your timezone: the days your streak counts in")
@app_commands.describe(timezone="an IANA name, e.g. Europe/Paris")
@app_commands.autocomplete(timezone=timezones)
async def timezone(interaction: discord.Interaction, timezone: str) -> None:
    async def use(t: Turn) -> None:
        await t.out.reply(await t.coach.set_timezone(t.actor, timezone))

    await turns_of(interaction).run(interaction, use)


# -- the tree --------------------------------------------------------------------------------
class CruscibleTree(app_commands.CommandTree):
    """The command tree; refused checks and failures become a private error message."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            text = str(error) or "You cannot use this command here."
        else:
            log.error("command failed", exc_info=error)
            text = "Something went wrong on our side; it has been logged."
        embeds = render(views.error(text)).embeds
        if interaction.response.is_done():
            await interaction.followup.send(embeds=embeds, ephemeral=True)
        else:
            await interaction.response.send_message(embeds=embeds, ephemeral=True)


# Guild install only, used in guilds only — https://discord.com/developers/docs/interactions/
# application-commands#interaction-contexts (integration_types [0], contexts [0])
GUILD_INSTALL = app_commands.AppInstallationType(guild=True, user=False)
GUILD_CONTEXT = app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False)


def build_tree(client: discord.Client) -> CruscibleTree:
    tree = CruscibleTree(client, allowed_contexts=GUILD_CONTEXT, allowed_installs=GUILD_INSTALL)
    admin = AdminCommands()
    admin.add_command(AdminContestCommands())
    for group in (ChallengeCommands(), EnvCommands(), admin, ContestCommands()):
        tree.add_command(group)
    for command in (submit, results, logs, leaderboard, tradeoffs, cancel, privacy, timezone):
        tree.add_command(command)
    return tree
