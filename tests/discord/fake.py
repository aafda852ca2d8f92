"""A local Discord: the REST API and the gateway, enough for the real discord.py client.

Everything runs on 127.0.0.1. Every REST call is recorded (with the files it carried), so tests
can say what the bot sent where. Interactions are delivered over the gateway, as Discord does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _sockets: list[tuple[web.WebSocketResponse, Callable[[str], Awaitable[None]]]] = field(
        default_factory=list
    )
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway-ws", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        for guild_id, channel_ids in GUILDS.items():
            for position, channel_id in enumerate(channel_ids):
                self.channels[channel_id] = {
                    "id": str(channel_id),
                    "type": 0,
                    "guild_id": str(guild_id),
                    "name": f"channel-{position}",
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

    # -- interactions -----------------------------------------------------------------------------
    def _interaction(
        self,
        kind: int,
        data: Json,
        who: Json,
        permissions: int,
        channel_id: int = CHANNEL_ID,
        **extra: Any,
    ) -> Json:
        iid = self.snowflake()
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
        **options: Any,
    ) -> Json:
        """``/name sub option:value`` (option types are guessed), or its autocompletion of the
        ``focused`` option."""
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
        return self._interaction(4 if focused else 2, data, who, permissions, channel_id)

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
                "members": [{"user": BOT, "roles": [], "joined_at": now(), "flags": 0}],
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
    def snowflake(self) -> int:
        return discord.utils.time_snowflake(datetime.now(UTC)) + next(self._ids)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body, files)
        self.calls.append(call)
        try:
            status, answer = self._answer(request, call)
        except KeyError:
            status, answer = 404, {"message": "Unknown", "code": 10003}
        call.status = status
        self._changed.set()
        if status == 204:
            return web.Response(status=204)
        return web.Response(
            status=status,
            body=json.dumps(answer).encode(),
            headers={"Content-Type": "application/json"},
        )

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
            return 200, self._callback(int(match.group(1)), match.group(2), body, call.files)
        if match := re.fullmatch(rf"/webhooks/{APP_ID}/([^/]+)", p):
            flags = body.get("flags", 0)
            return 200, self._message(CHANNEL_ID, body, call.files, flags=flags)
        if match := re.fullmatch(rf"/webhooks/{APP_ID}/([^/]+)/messages/(@original|\d+)", p):
            token, which = match.groups()
            mid = self.originals[token] if which == "@original" else int(which)
            return 200, self._message(CHANNEL_ID, body, call.files, flags=EPHEMERAL, mid=mid)
        if match := re.fullmatch(r"/channels/(\d+)", p):
            return 200, self.channels[int(match.group(1))]
        if match := re.fullmatch(r"/channels/(\d+)/messages", p):
            channel_id = int(match.group(1))
            self.channels[channel_id]  # noqa: B018 — 404 for an unknown channel
            if self.dms_closed and channel_id in self.dm_channels:
                return 403, {"message": "Cannot send messages to this user", "code": 50007}
            return 200, self._message(channel_id, body, call.files)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            old = self.messages.get(int(match.group(2)))
            if old is None:
                return 404, {"message": "Unknown Message", "code": 10008}
            return 200, self._message(int(match.group(1)), body, call.files, mid=int(old["id"]))
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", p):
            return self._thread(int(match.group(1)), int(match.group(2)), body)
        self.unknown.append(call)
        return 404, {"message": f"the fake does not know {m} {p}", "code": 0}

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
    return {"channel": 7, "role": 8}.get(name, 3)


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
