"""A local Discord: the REST API and the gateway, enough for the real discord.py client.

Everything runs on 127.0.0.1. Every REST call is recorded (with the files it carried), so tests
can say what the bot sent where. Interactions are delivered over the gateway, as Discord does.

It refuses what Discord refuses (each rule cites the page that states it), and tests script the
refusals: ``deny(channel, "SEND_MESSAGES")``, ``archive(thread)``, ``delete_message(id)``,
``delete_channel(id)``, ``expire_interactions()``, ``rate_limit(route, times=n)``,
``dms_closed``. Error codes:
https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

API = "/api/v10"
TOKEN = "fake-bot-token"
APP_ID = 1100000000000000001
GUILD_ID = 1100000000000000100
CHANNEL_ID = 1100000000000000200
OTHER_CHANNEL_ID = 1100000000000000201
SECOND_GUILD_ID = 1100000000000000101  # one process serves both guilds
SECOND_CHANNEL_ID = 1100000000000000202
ROLE_ID = 1100000000000000300
GUILDS = {GUILD_ID: [CHANNEL_ID, OTHER_CHANNEL_ID], SECOND_GUILD_ID: [SECOND_CHANNEL_ID]}
BOT = {
    "id": "1100000000000000002",
    "username": "cruscible",
    "global_name": None,
    "discriminator": "0",
    "avatar": None,
    "bot": True,
}
OWNER = {
    "id": "1100000000000000003",
    "username": "owner",
    "global_name": None,
    "discriminator": "0",
    "avatar": None,
}
EPHEMERAL = 64
MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 31)  # view, send, use application commands
# https://discord.com/developers/docs/topics/permissions#permissions-bitwise-permission-flags
PERMISSIONS = {
    "VIEW_CHANNEL": 1 << 10,
    "SEND_MESSAGES": 1 << 11,
    "EMBED_LINKS": 1 << 14,
    "ATTACH_FILES": 1 << 15,
    "READ_MESSAGE_HISTORY": 1 << 16,
    "CREATE_PUBLIC_THREADS": 1 << 35,
    "SEND_MESSAGES_IN_THREADS": 1 << 38,
}
BOT_PERMISSIONS = 309237763072  # the README's invite link: exactly the flags above
BOT_ROLE_ID = 1100000000000000310
# "Interaction tokens are valid for 15 minutes" —
# https://discord.com/developers/docs/interactions/receiving-and-responding#followup-messages
TOKEN_VALID = timedelta(minutes=15)
# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
EMBED_LIMITS = {"title": 256, "description": 4096, "footer": 2048, "author": 256}
EMBED_TOTAL, EMBED_FIELDS, FIELD_NAME, FIELD_VALUE, EMBEDS = 6000, 25, 256, 1024, 10
CONTENT_MAX = 2000  # https://discord.com/developers/docs/resources/message#create-message
ATTACHMENTS_MAX = 10  # https://discord.com/developers/docs/resources/message#create-message
# https://discord.com/developers/docs/components/reference#action-row and #button
ROWS_MAX, BUTTONS_PER_ROW, LABEL_MAX, CUSTOM_ID_MAX = 5, 5, 80, 100
# https://discord.com/developers/docs/components/reference#text-input (label, placeholder) and
# https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
INPUT_LABEL_MAX, PLACEHOLDER_MAX, MODAL_TITLE_MAX = 45, 100, 45
# The files of one request: Discord's smallest upload limit (a server without boosts, a DM);
# over it, 413 with JSON code 40005 "Request entity too large" —
# https://discord.com/developers/docs/reference#uploading-files and
# https://discord.com/developers/docs/topics/opcodes-and-status-codes#json
UPLOAD_MAX = 8 * 2**20

Json = dict[str, Any]


def now() -> str:
    return datetime.now(UTC).isoformat()


def user(uid: int, name: str) -> Json:
    return {
        "id": str(uid),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
    }


GRACE = user(1100000000000002001, "grace")  # a learner
LINUS = user(1100000000000002002, "linus")  # another learner
ADA = user(1100000000000002003, "ada")  # has Manage Server


@dataclass
class Call:
    """One REST request the bot made, and the status the fake answered."""

    method: str
    path: str  # after /api/v10, e.g. /channels/1/messages
    query: dict[str, str]
    json: Any
    files: dict[str, bytes]
    status: int = 200

    def text(self) -> str:
        """Everything the request carried, as text (to look for secrets)."""
        parts = [json.dumps(self.json)] if self.json is not None else []
        parts += [b.decode(errors="replace") for b in self.files.values()]
        return "\n".join(parts)

    def embeds(self) -> list[Json]:
        body = self.json if isinstance(self.json, dict) else {}
        return body.get("embeds") or (body.get("data") or {}).get("embeds") or []


@dataclass
class FakeDiscord:
    dms_closed: bool = False
    calls: list[Call] = field(default_factory=list)
    identifies: list[Json] = field(default_factory=list)
    messages: dict[int, Json] = field(default_factory=dict)  # id -> message
    channels: dict[int, Json] = field(default_factory=dict)
    dm_channels: set[int] = field(default_factory=set)
    commands: list[Json] = field(default_factory=list)
    originals: dict[str, int] = field(default_factory=dict)  # interaction token -> message id
    unknown: list[Call] = field(default_factory=list)  # requests the fake has no answer for
    gateway_queries: list[dict[str, str]] = field(default_factory=list)
    closed_dms: set[str] = field(default_factory=set)  # users whose DMs refuse the bot
    denied: dict[int, set[str]] = field(default_factory=dict)  # channel -> permissions denied
    expired: set[str] = field(default_factory=set)  # interaction tokens expired by the test
    acknowledged: set[str] = field(default_factory=set)  # tokens with an initial response
    expired_calls: list[Call] = field(default_factory=list)  # calls made on an expired token
    limits: list[list[Any]] = field(default_factory=list)  # [regex, calls left, retry after]
    rate_limited: list[Call] = field(default_factory=list)
    refused: list[Call] = field(default_factory=list)  # every 4xx the rules answered
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _interaction_ids: list[int] = field(default_factory=list)
    _sockets: list[tuple[web.WebSocketResponse, Callable[[str], Awaitable[None]]]] = field(
        default_factory=list
    )
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""
    cdn: dict[str, bytes] = field(default_factory=dict)  # attachment path -> content
    cdn_gets: list[str] = field(default_factory=list)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway-ws", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        app.router.add_get("/cdn/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        for guild_id, channel_ids in GUILDS.items():
            for position, channel_id in enumerate(channel_ids):
                self.channels[channel_id] = self._text_channel(
                    channel_id, guild_id, f"channel-{position}", position
                )

    @staticmethod
    def _text_channel(channel_id: int, guild_id: int, name: str, position: int) -> Json:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    async def stop(self) -> None:
        for ws, _ in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def gateway_url(self) -> yarl.URL:
        return yarl.URL(self.url.replace("http", "ws") + "/gateway-ws")

    # -- what was sent ----------------------------------------------------------------------------
    def calls_to(self, method: str, pattern: str) -> list[Call]:
        regex = re.compile(pattern)
        return [c for c in self.calls if c.method == method and regex.fullmatch(c.path)]

    def is_dm(self, call: Call) -> bool:
        m = re.fullmatch(r"/channels/(\d+)/messages(/\d+)?", call.path)
        return bool(m and int(m.group(1)) in self.dm_channels)

    async def wait_for(self, check: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until ``check()`` returns something truthy (re-checked on every request)."""
        async with asyncio.timeout(within):
            while not (found := check()):
                self._changed.clear()
                await self._changed.wait()
            return found

    # -- scripted refusals -------------------------------------------------------------------------
    async def deny(self, channel_id: int, *permissions: str) -> None:
        """The bot loses ``permissions`` (e.g. ``"SEND_MESSAGES"``) in the channel: an overwrite
        for its member, announced over the gateway (so discord.py's cache agrees)."""
        self.denied.setdefault(channel_id, set()).update(permissions)
        await self._overwrite(channel_id)

    async def allow(self, channel_id: int) -> None:
        """Undo every ``deny`` of the channel."""
        self.denied.pop(channel_id, None)
        await self._overwrite(channel_id)

    async def _overwrite(self, channel_id: int) -> None:
        channel = self.channels[channel_id]
        bits = sum(PERMISSIONS[p] for p in self.denied.get(channel_id, ()))
        channel["permission_overwrites"] = (
            [{"id": BOT["id"], "type": 1, "allow": "0", "deny": str(bits)}] if bits else []
        )
        await self.dispatch("CHANNEL_UPDATE", channel)

    def archive(self, thread_id: int, *, locked: bool = False, archived: bool = True) -> None:
        """Archive (and lock) a thread; ``archived=False`` opens it again."""
        meta = self.channels[thread_id]["thread_metadata"]
        meta["archived"], meta["locked"] = archived, locked and archived

    def delete_message(self, message_id: int) -> None:
        self.messages.pop(message_id, None)

    async def add_channel(self, guild_id: int = GUILD_ID, name: str = "extra") -> int:
        """A new text channel in the guild, announced over the gateway."""
        channel_id = self.snowflake()
        self.channels[channel_id] = self._text_channel(channel_id, guild_id, name, 9)
        await self.dispatch("CHANNEL_CREATE", self.channels[channel_id])
        return channel_id

    async def delete_channel(self, channel_id: int) -> None:
        channel = self.channels.pop(channel_id)
        await self.dispatch("CHANNEL_DELETE", channel)

    def expire_interactions(self) -> None:
        """Every interaction so far is past its 15 minutes."""
        self.expired.update(f"itoken-{m}" for m in self._interaction_ids)

    def rate_limit(self, route: str, *, times: int, retry_after: float = 0.05) -> None:
        """The next ``times`` calls whose ``"METHOD /path"`` matches the regex ``route`` are
        answered 429 (discord.py retries a 429 up to 5 times before it gives up)."""
        self.limits.append([re.compile(route), times, retry_after])

    def _token_expired(self, token: str) -> bool:
        if token in self.expired:
            return True
        iid = int(token.removeprefix("itoken-")) if token.startswith("itoken-") else 0
        born = discord.utils.snowflake_time(iid) if iid else datetime.now(UTC)
        return datetime.now(UTC) - born >= TOKEN_VALID

    # -- interactions -----------------------------------------------------------------------------
    def _interaction(
        self,
        kind: int,
        data: Json,
        who: Json,
        permissions: int,
        channel_id: int = CHANNEL_ID,
        age: timedelta = timedelta(0),
        **extra: Any,
    ) -> Json:
        iid = self.snowflake(age)
        self._interaction_ids.append(iid)
        channel = self.channels[channel_id]
        return {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": kind,
            "data": data,
            "guild_id": channel["guild_id"],
            "channel_id": str(channel_id),
            "channel": channel | {"permissions": str(permissions)},
            "member": {
                "user": who,
                "roles": [],
                "joined_at": now(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                "permissions": str(permissions),
            },
            "token": f"itoken-{iid}",
            "version": 1,
            "app_permissions": str((1 << 41) - 1),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": channel["guild_id"]},
            "context": 0,
            "attachment_size_limit": 25 * 2**20,
            **extra,
        }

    def slash(
        self,
        name: str,
        sub: str | None = None,
        *,
        who: Json,
        permissions: int = EVERYONE_PERMISSIONS,
        channel_id: int = CHANNEL_ID,
        resolved: Json | None = None,
        focused: str | None = None,
        age: timedelta = timedelta(0),
        **options: Any,
    ) -> Json:
        """``/name sub option:value`` (option types are guessed), or its autocompletion of the
        ``focused`` option; ``age``: made that long ago (its token expires 15 minutes after)."""
        opts: list[Json] = [
            {"name": k, "type": _option_type(k), "value": v}
            | ({"focused": True} if k == focused else {})
            for k, v in options.items()
        ]
        if sub is not None:
            opts = [{"name": sub, "type": 1, "options": opts}]
        command = next((c for c in self.commands if c["name"] == name), {"id": "1"})
        data = {"id": command["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        return self._interaction(4 if focused else 2, data, who, permissions, channel_id, age)

    def attach(self, filename: str, content: bytes, *, size: int | None = None) -> tuple[str, Json]:
        """A file a user attaches to a slash command option: its id (the option's value) and
        the ``resolved`` data of the interaction; served from the fake CDN. ``size``: the size
        Discord declares (the content's by default)
        (https://discord.com/developers/docs/resources/message#attachment-object)."""
        aid = str(self.snowflake())
        path = f"/cdn/attachments/{aid}/{filename}"
        self.cdn[path] = content
        attachment = {
            "id": aid,
            "filename": filename,
            "size": len(content) if size is None else size,
            "url": self.url + path,
            "proxy_url": self.url + path,
            "content_type": "application/gzip",
        }
        return aid, {"attachments": {aid: attachment}}

    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_gets.append(request.path)
        content = self.cdn.get(request.path)
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content)

    def press(self, custom_id: str, message: Json, *, who: Json) -> Json:
        """A button press on ``message``."""
        data = {"custom_id": custom_id, "component_type": 2}
        channel_id = int(message["channel_id"])
        return self._interaction(3, data, who, EVERYONE_PERMISSIONS, channel_id, message=message)

    def posted(self, *custom_ids: str, channel_id: int = CHANNEL_ID) -> Json:
        """A message with buttons, as if the bot had sent it before it last restarted."""
        buttons = [{"type": 2, "style": 1, "label": c, "custom_id": c} for c in custom_ids]
        components = [{"type": 1, "components": buttons}]
        return self._message(channel_id, {"components": components}, {})

    def modal_submit(self, custom_id: str, values: dict[str, str], *, who: Json) -> Json:
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
            for k, v in values.items()
        ]
        data = {"custom_id": custom_id, "components": rows}
        return self._interaction(5, data, who, EVERYONE_PERMISSIONS)

    async def interact(self, payload: Json) -> str:
        """Deliver an interaction over the gateway; returns its token."""
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload["token"]

    def callback(self, token: str) -> Call | None:
        found = [c for c in self.calls if c.path.endswith(f"/{token}/callback")]
        return found[0] if found else None

    def webhook_calls(self, token: str) -> list[Call]:
        return [c for c in self.calls if c.path.startswith(f"/webhooks/{APP_ID}/{token}")]

    # -- gateway ----------------------------------------------------------------------------------
    async def dispatch(self, event: str, data: Json) -> None:
        """Send a dispatch to the first connected client."""
        payload = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        open_sockets = [send for ws, send in self._sockets if not ws.closed]
        if open_sockets:
            await open_sockets[0](json.dumps(payload))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        if request.query.get("compress") == "zlib-stream":
            deflate = zlib.compressobj()

            async def send(text: str) -> None:
                await ws.send_bytes(
                    deflate.compress(text.encode()) + deflate.flush(zlib.Z_SYNC_FLUSH)
                )
        else:

            async def send(text: str) -> None:
                await ws.send_str(text)

        self._sockets.append((ws, send))
        await send(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await send(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                self.identifies.append(frame["d"])
                self._changed.set()
                await send(json.dumps(self._ready()))
                for guild_id in GUILDS:
                    await send(json.dumps(self._guild_create(guild_id)))
        return ws

    def _ready(self) -> Json:
        return {
            "op": 0,
            "t": "READY",
            "s": next(self._seq),
            "d": {
                "v": 10,
                "user": BOT,
                "guilds": [{"id": str(g), "unavailable": True} for g in GUILDS],
                "session_id": "fake-session",
                "resume_gateway_url": str(self.gateway_url),
                "application": {"id": str(APP_ID), "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        }

    def _guild_create(self, guild_id: int) -> Json:
        return {
            "op": 0,
            "t": "GUILD_CREATE",
            "s": next(self._seq),
            "d": {
                "id": str(guild_id),
                "name": f"Guild {list(GUILDS).index(guild_id) + 1}",
                "owner_id": OWNER["id"],
                "unavailable": False,
                "member_count": 3,
                "large": False,
                "joined_at": now(),
                "features": [],
                "emojis": [],
                "stickers": [],
                "roles": [
                    {
                        "id": str(guild_id),
                        "name": "@everyone",
                        "permissions": str(EVERYONE_PERMISSIONS),
                        "position": 0,
                        "color": 0,
                        "hoist": False,
                        "managed": False,
                        "mentionable": False,
                    },
                    {
                        "id": str(BOT_ROLE_ID),
                        "name": "cruscible",
                        "permissions": str(BOT_PERMISSIONS),
                        "position": 2,
                        "color": 0,
                        "hoist": False,
                        "managed": True,
                        "mentionable": False,
                        "tags": {"bot_id": BOT["id"]},
                    },
                    {
                        "id": str(ROLE_ID + list(GUILDS).index(guild_id)),
                        "name": "learners",
                        "permissions": "0",
                        "position": 1,
                        "color": 0,
                        "hoist": False,
                        "managed": False,
                        "mentionable": True,
                    },
                ],
                "channels": [self.channels[c] for c in GUILDS[guild_id]],
                "threads": [],
                "members": [
                    {"user": BOT, "roles": [str(BOT_ROLE_ID)], "joined_at": now(), "flags": 0}
                ],
                "voice_states": [],
                "presences": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "premium_tier": 0,
                "verification_level": 0,
                "default_message_notifications": 0,
                "explicit_content_filter": 0,
                "mfa_level": 0,
                "nsfw_level": 0,
                "preferred_locale": "en-US",
            },
        }

    # -- REST -------------------------------------------------------------------------------------
    def snowflake(self, age: timedelta = timedelta(0)) -> int:
        return discord.utils.time_snowflake(datetime.now(UTC) - age) + next(self._ids)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body, files)
        self.calls.append(call)
        limited = self._limited(call)
        if limited is not None:
            return limited
        if (large := _too_large(call)) is not None:
            self.refused.append(call)
            self._changed.set()
            return large
        try:
            status, answer = self._answer(request, call)
        except KeyError:
            status, answer = 404, {"message": "Unknown Channel", "code": 10003}
        call.status = status
        if 400 <= status < 500:
            self.refused.append(call)
        self._changed.set()
        if status == 204:
            return web.Response(status=204)
        return web.Response(
            status=status,
            body=json.dumps(answer).encode(),
            headers={"Content-Type": "application/json"},
        )

    def _limited(self, call: Call) -> web.Response | None:
        """A scripted 429, as Discord sends it: ``retry_after`` in the JSON body, the
        ``Retry-After`` and ``X-RateLimit-*`` headers (and ``Via``, which discord.py reads to tell
        Discord's 429 from a Cloudflare ban) —
        https://discord.com/developers/docs/topics/rate-limits#exceeding-a-rate-limit"""
        for rule in self.limits:
            regex, left, retry_after = rule
            if left > 0 and regex.fullmatch(f"{call.method} {call.path}"):
                rule[1] -= 1
                call.status = 429
                self.rate_limited.append(call)
                self._changed.set()
                headers = {
                    "Content-Type": "application/json",
                    "Retry-After": str(max(1, round(retry_after))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{datetime.now(UTC).timestamp() + retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                    "X-RateLimit-Bucket": "fake-bucket",
                    "X-RateLimit-Scope": "user",
                    "Via": "1.1 google",
                }
                answer = {
                    "message": "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": False,
                    "code": 0,
                }
                return web.Response(status=429, body=json.dumps(answer).encode(), headers=headers)
        return None

    def _answer(self, request: web.Request, call: Call) -> tuple[int, Any]:
        m, p, body = call.method, call.path, call.json or {}
        if (m, p) == ("GET", "/users/@me"):
            if request.headers.get("Authorization") != f"Bot {TOKEN}":
                return 401, {"message": "401: Unauthorized", "code": 0}
            return 200, BOT
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            return 200, _application()
        if m == "GET" and p in ("/gateway", "/gateway/bot"):
            limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            return 200, {"url": str(self.gateway_url), "shards": 1, "session_start_limit": limit}
        if (m, p) == ("PUT", f"/applications/{APP_ID}/commands"):
            self.commands = [
                c | {"id": str(self.snowflake()), "application_id": str(APP_ID), "version": "1"}
                for c in body
            ]
            return 200, self.commands
        if (m, p) == ("POST", "/users/@me/channels"):
            dm_id = self.snowflake()
            self.dm_channels.add(dm_id)
            recipient = user(int(body["recipient_id"]), "learner")
            self.channels[dm_id] = {"id": str(dm_id), "type": 1, "recipients": [recipient]}
            return 200, self.channels[dm_id] | {"last_message_id": None}
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            iid, token = int(match.group(1)), match.group(2)
            if self._token_expired(token):
                self.expired_calls.append(call)
                return 404, {"message": "Unknown interaction", "code": 10062}
            # "Interaction has already been acknowledged" — one initial response per interaction:
            # https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction
            if token in self.acknowledged:
                return 400, _error(40060, "Interaction has already been acknowledged.")
            if invalid := _invalid((body.get("data") or {}), call.files):
                return 400, invalid
            self.acknowledged.add(token)
            return 200, self._callback(iid, token, body, call.files)
        if match := re.fullmatch(rf"/webhooks/{APP_ID}/([^/]+)(/messages/(@original|\d+))?", p):
            token, _, which = match.groups()
            if self._token_expired(token):  # the 15 minutes are over (see TOKEN_VALID)
                self.expired_calls.append(call)
                return 401, _error(50027, "Invalid Webhook Token")
            if m in ("POST", "PATCH") and (invalid := _invalid(body, call.files)):
                return 400, invalid
            if which is None:
                flags = body.get("flags", 0)
                return 200, self._message(CHANNEL_ID, body, call.files, flags=flags)
            mid = self.originals[token] if which == "@original" else int(which)
            return 200, self._message(CHANNEL_ID, body, call.files, flags=EPHEMERAL, mid=mid)
        if match := re.fullmatch(r"/channels/(\d+)", p):
            channel_id = int(match.group(1))
            channel = self.channels[channel_id]
            if "VIEW_CHANNEL" in self._denied(channel_id):
                return 403, _error(50001, "Missing Access")
            return 200, channel
        if match := re.fullmatch(r"/channels/(\d+)/messages", p):
            channel_id = int(match.group(1))
            if refusal := self._refuse_post(channel_id, call):
                return refusal
            return 200, self._message(channel_id, body, call.files)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            channel_id, message_id = int(match.group(1)), int(match.group(2))
            self.channels[channel_id]  # noqa: B018 — 404 Unknown Channel
            old = self.messages.get(message_id)
            if old is None or int(old["channel_id"]) != channel_id:
                return 404, _error(10008, "Unknown Message")
            if invalid := _invalid(body, call.files):
                return 400, invalid
            return 200, self._message(channel_id, body, call.files, mid=message_id)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", p):
            channel_id, message_id = int(match.group(1)), int(match.group(2))
            self.channels[channel_id]  # noqa: B018 — 404 Unknown Channel
            # Start Thread from Message needs CREATE_PUBLIC_THREADS —
            # https://discord.com/developers/docs/resources/channel#start-thread-from-message
            if {"VIEW_CHANNEL", "CREATE_PUBLIC_THREADS"} & self._denied(channel_id):
                return 403, _error(50013, "Missing Permissions")
            if message_id not in self.messages:
                return 404, _error(10008, "Unknown Message")
            return self._thread(channel_id, message_id, body)
        self.unknown.append(call)
        return 404, {"message": f"the fake does not know {m} {p}", "code": 0}

    def _denied(self, channel_id: int) -> set[str]:
        """What the bot is denied in the channel (in a thread: in its parent)."""
        channel = self.channels.get(channel_id) or {}
        parent = channel.get("parent_id") if channel.get("type") == 11 else None
        return self.denied.get(int(parent) if parent else channel_id, set())

    def _refuse_post(self, channel_id: int, call: Call) -> tuple[int, Json] | None:
        """Why Create Message is refused, if it is —
        https://discord.com/developers/docs/resources/message#create-message (SEND_MESSAGES;
        in a thread SEND_MESSAGES_IN_THREADS; ATTACH_FILES with files)."""
        channel = self.channels[channel_id]  # KeyError: 404 Unknown Channel
        if channel_id in self.dm_channels:
            recipient = channel["recipients"][0]["id"]
            if self.dms_closed or recipient in self.closed_dms:
                return 403, _error(50007, "Cannot send messages to this user")
        denied = self._denied(channel_id)
        if "VIEW_CHANNEL" in denied:
            return 403, _error(50001, "Missing Access")
        thread = channel.get("type") == 11
        needs = {"SEND_MESSAGES_IN_THREADS" if thread else "SEND_MESSAGES"}
        if call.files:
            needs.add("ATTACH_FILES")
        if needs & denied:
            return 403, _error(50013, "Missing Permissions")
        if thread:
            # https://discord.com/developers/docs/topics/threads#archiving-and-unarchiving
            meta = channel["thread_metadata"]
            if meta["locked"]:
                return 400, _error(160005, "Thread is locked")
            if meta["archived"]:
                return 400, _error(50083, "Operation not allowed on an archived thread")
        invalid = _invalid(call.json or {}, call.files)
        return (400, invalid) if invalid else None

    def _callback(self, iid: int, token: str, body: Json, files: dict[str, bytes]) -> Json:
        kind = body["type"]
        data = body.get("data") or {}
        flags = data.get("flags", 0)
        answer: Json = {
            "interaction": {
                "id": str(iid),
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & EPHEMERAL),
            },
            "resource": {"type": kind},
        }
        if kind in (4, 5):
            msg = self._message(CHANNEL_ID, data, files, flags=flags)
            answer["interaction"]["response_message_id"] = msg["id"]
            self.originals[token] = int(msg["id"])
            if kind == 4:
                answer["resource"]["message"] = msg
        return answer

    def _thread(self, channel_id: int, message_id: int, body: Json) -> tuple[int, Json]:
        if message_id in self.channels:
            return 400, {"message": "A thread has already been created", "code": 160004}
        self.channels[message_id] = {
            "id": str(message_id),
            "type": 11,
            "guild_id": str(GUILD_ID),
            "parent_id": str(channel_id),
            "owner_id": BOT["id"],
            "name": body["name"],
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": now(),
                "locked": False,
            },
        }
        return 200, self.channels[message_id]

    def _message(
        self,
        channel_id: int,
        body: Json,
        files: dict[str, bytes],
        *,
        flags: int = 0,
        mid: int | None = None,
    ) -> Json:
        mid = mid or self.snowflake()
        attachments = [
            {
                "id": str(self.snowflake()),
                "filename": name,
                "size": len(content),
                "url": f"{self.url}/attachments/{name}",
                "proxy_url": f"{self.url}/attachments/{name}",
            }
            for name, content in files.items()
        ]
        msg = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": BOT,
            "content": body.get("content") or "",
            "timestamp": now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": flags,
        }
        self.messages[mid] = msg
        return msg


def _too_large(call: Call) -> web.Response | None:
    """413 (40005) for files over :data:`UPLOAD_MAX` in one request, else None."""
    if sum(map(len, call.files.values())) <= UPLOAD_MAX:
        return None
    call.status = 413
    return web.Response(
        status=413,
        body=json.dumps(_error(40005, "Request entity too large")).encode(),
        headers={"Content-Type": "application/json"},
    )


def _error(code: int, message: str, errors: Json | None = None) -> Json:
    return {"code": code, "message": message} | ({"errors": errors} if errors else {})


def _invalid(body: Json, files: dict[str, bytes]) -> Json | None:
    """A 400 ``Invalid Form Body`` (50035) for a message over Discord's limits, or None."""
    problems: Json = {}
    if len(body.get("content") or "") > CONTENT_MAX:
        problems["content"] = f"Must be {CONTENT_MAX} or fewer in length."
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS:
        problems["embeds"] = f"Must be {EMBEDS} or fewer in length."
    total = 0
    for i, embed in enumerate(embeds):
        texts = {
            "title": embed.get("title") or "",
            "description": embed.get("description") or "",
            "footer": (embed.get("footer") or {}).get("text") or "",
            "author": (embed.get("author") or {}).get("name") or "",
        }
        for key, text in texts.items():
            if len(text) > EMBED_LIMITS[key]:
                problems[f"embeds.{i}.{key}"] = f"Must be {EMBED_LIMITS[key]} or fewer in length."
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS:
            problems[f"embeds.{i}.fields"] = f"Must be {EMBED_FIELDS} or fewer in length."
        for j, f in enumerate(fields):
            if len(f.get("name") or "") > FIELD_NAME:
                problems[f"embeds.{i}.fields.{j}.name"] = "Too long."
            if len(f.get("value") or "") > FIELD_VALUE:
                problems[f"embeds.{i}.fields.{j}.value"] = "Too long."
        total += sum(map(len, texts.values()))
        total += sum(len(f.get("name") or "") + len(f.get("value") or "") for f in fields)
    if total > EMBED_TOTAL:
        problems["embeds"] = f"Embed size exceeds maximum size of {EMBED_TOTAL}"
    rows = body.get("components") or []
    if len(rows) > ROWS_MAX:
        problems["components"] = f"Must be {ROWS_MAX} or fewer in length."
    for i, row in enumerate(rows):
        buttons = row.get("components") or []
        if len(buttons) > BUTTONS_PER_ROW:
            problems[f"components.{i}.components"] = "Must be 5 or fewer in length."
        for j, b in enumerate(buttons):
            if len(b.get("label") or "") > (INPUT_LABEL_MAX if b.get("type") == 4 else LABEL_MAX):
                problems[f"components.{i}.components.{j}.label"] = "Too long."
            if len(b.get("placeholder") or "") > PLACEHOLDER_MAX:
                problems[f"components.{i}.components.{j}.placeholder"] = "Too long."
            if len(b.get("custom_id") or "") > CUSTOM_ID_MAX:
                problems[f"components.{i}.components.{j}.custom_id"] = "Too long."
    if len(body.get("title") or "") > MODAL_TITLE_MAX:  # a modal's; messages have none
        problems["title"] = f"Must be {MODAL_TITLE_MAX} or fewer in length."
    if len(files) > ATTACHMENTS_MAX:
        problems["files"] = f"Must be {ATTACHMENTS_MAX} or fewer in length."
    return _error(50035, "Invalid Form Body", problems) if problems else None


def _application() -> Json:
    return {
        "id": str(APP_ID),
        "name": "Cruscible (fake)",
        "icon": None,
        "description": "",
        "rpc_origins": [],
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": OWNER,
        "summary": "",
        "verify_key": "0" * 64,
        "team": None,
        "flags": 0,
        "interactions_endpoint_url": None,
    }


def _option_type(name: str) -> int:
    return {"channel": 7, "role": 8, "code": 11, "hosted_only": 5, "keep": 5}.get(name, 3)


async def _read_body(request: web.Request) -> tuple[Any, dict[str, bytes]]:
    """The JSON body, or the payload_json and files of a multipart body."""
    if request.content_type == "application/json":
        return await request.json(), {}
    if request.content_type.startswith("multipart/"):
        body: Any = None
        files: dict[str, bytes] = {}
        reader = await request.multipart()
        async for part in reader:
            content = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":  # type: ignore[union-attr]
                body = json.loads(content)
            else:
                files[part.filename or part.name or "file"] = bytes(content)  # type: ignore[union-attr]
        return body, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), {}
