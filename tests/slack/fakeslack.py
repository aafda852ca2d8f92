"""A local Slack: the Web API methods the adapter calls, response_url, file uploads, Socket Mode.

It records every call; it signs requests to the app as Slack does. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
TEAM = "T0TEST"
OAUTH_TEAM, OAUTH_TOKEN, OAUTH_CODE = "T0OAUTH", "xoxb-oauth-team", "code-123"
NO_AUTH = {"oauth.v2.access", "apps.connections.open"}
WAIT_S = 15.0


class Refuse(Exception):
    """Answer ``{"ok": false, "error": ...}`` as Slack does."""


@dataclass
class Call:
    method: str  # a Web API method, "response_url" or "upload"
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def dump(self) -> str:
        return json.dumps(self.args, default=str)

    @property
    def channel(self) -> str:
        return str(self.args.get("channel") or self.args.get("channel_id") or "")

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")


@dataclass
class FakeSlack:
    admins: set[str] = field(default_factory=set)
    dm_closed: set[str] = field(default_factory=set)
    rate_limited: dict[str, int] = field(default_factory=dict)  # method → 429s to answer first
    tokens: dict[str, str] = field(default_factory=lambda: {BOT_TOKEN: TEAM})
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (channel, ts)
    refused: list[Call] = field(default_factory=list)  # answered 429
    uploads: dict[str, bytes] = field(default_factory=dict)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _socket: web.WebSocketResponse | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- server -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.post("/api/{method}", self._api),
                web.get("/api/{method}", self._api),
                web.post("/upload/{file_id}", self._upload),
                web.post("/response/{key}", self._response),
                web.get("/socket", self._websocket),
            ]
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, key: str) -> str:
        return f"{self.base}/response/{key}"

    # -- what was called --------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[Call], bool], within: float = WAIT_S) -> Call:
        """The first call that matches, waiting up to ``within`` seconds for it."""
        async with asyncio.timeout(within):
            while True:
                for call in self.calls:
                    if predicate(call):
                        return call
                await asyncio.sleep(0.05)

    def public_calls(self) -> list[Call]:
        """Every call whose content lands outside a DM (file bytes count with their share)."""
        dm_files = {
            f["id"]
            for c in self.calls_to("files.completeUploadExternal")
            if c.is_dm
            for f in json.loads(c.args["files"])
        }
        return [
            c
            for c in self.calls
            if not c.is_dm and not (c.method == "upload" and c.args["file_id"] in dm_files)
        ]

    # -- handlers ---------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = (
            auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
        )
        call = Call(method, args, token)
        if self.rate_limited.get(method):
            self.rate_limited[method] -= 1
            self.refused.append(call)
            body = {"ok": False, "error": "ratelimited"}
            return web.json_response(body, status=429, headers={"Retry-After": "0"})
        self.calls.append(call)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        try:
            if handler is None:
                raise Refuse("unknown_method")
            if method not in NO_AUTH and token not in self.tokens:
                raise Refuse("invalid_auth" if token else "not_authed")
            call.answer = {"ok": True, **handler(call)}
            return web.json_response(call.answer)
        except Refuse as exc:
            return web.json_response({"ok": False, "error": str(exc)})

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        self.uploads[file_id] = data
        self.calls.append(
            Call("upload", {"file_id": file_id, "data": data.decode("latin-1")}, None)
        )
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        self.calls.append(
            Call("response_url", {"key": request.match_info["key"], **await request.json()}, None)
        )
        return web.Response(text="ok")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        self._connected.set()
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}
        )
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.socket_acks.append(json.loads(msg.data))
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Push a Socket Mode envelope to the connected app; returns its id."""
        async with asyncio.timeout(WAIT_S):
            await self._connected.wait()
        assert self._socket is not None
        envelope_id = f"env-{next(self._ids)}"
        await self._socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": True,
            }
        )
        return envelope_id

    # -- Web API methods --------------------------------------------------------------------
    def _ts(self) -> str:
        return f"{time.time():.0f}.{next(self._ids):06d}"

    def m_auth_test(self, call: Call) -> dict[str, Any]:
        team = self.tokens[call.token or ""]
        return {
            "team_id": team,
            "team": "Test Team",
            "user_id": "UBOT",
            "bot_id": "BBOT",
            "url": "https://test.slack.com/",
        }

    def m_chat_postMessage(self, call: Call) -> dict[str, Any]:
        ts = self._ts()
        self.messages[call.channel, ts] = call.args
        return {
            "channel": call.channel,
            "ts": ts,
            "message": {"text": call.args.get("text"), "ts": ts},
        }

    def m_chat_postEphemeral(self, call: Call) -> dict[str, Any]:
        return {"message_ts": self._ts()}

    def m_chat_update(self, call: Call) -> dict[str, Any]:
        key = (call.channel, call.args["ts"])
        if key not in self.messages:  # never posted, or deleted since
            raise Refuse("message_not_found")
        self.messages[key] = call.args
        return {"channel": call.channel, "ts": call.args["ts"], "text": call.args.get("text")}

    def m_conversations_open(self, call: Call) -> dict[str, Any]:
        user = call.args["users"]
        if user in self.dm_closed:
            raise Refuse("cannot_dm_user")
        return {"channel": {"id": f"D{user}"}}

    def m_conversations_join(self, call: Call) -> dict[str, Any]:
        if call.channel.startswith("G"):
            raise Refuse("method_not_supported_for_channel_type")
        return {"channel": {"id": call.channel}}

    def m_users_info(self, call: Call) -> dict[str, Any]:
        user = call.args["user"]
        return {"user": {"id": user, "name": user.lower(), "is_admin": user in self.admins}}

    def m_views_open(self, call: Call) -> dict[str, Any]:
        return {"view": {"id": "V1", **_view(call)}}

    def m_views_publish(self, call: Call) -> dict[str, Any]:
        return {"view": {"id": "VHOME", **_view(call)}}

    def m_files_getUploadURLExternal(self, call: Call) -> dict[str, Any]:
        file_id = f"F{next(self._ids)}"
        return {"upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def m_files_completeUploadExternal(self, call: Call) -> dict[str, Any]:
        return {
            "files": [{"id": f["id"], "title": f["title"]} for f in json.loads(call.args["files"])]
        }

    def m_apps_connections_open(self, call: Call) -> dict[str, Any]:
        if call.token != APP_TOKEN:
            raise Refuse("invalid_auth")
        return {"url": f"ws://127.0.0.1:{self._port}/socket"}

    def m_oauth_v2_access(self, call: Call) -> dict[str, Any]:
        if call.args.get("code") != OAUTH_CODE:
            raise Refuse("invalid_code")
        self.tokens[OAUTH_TOKEN] = OAUTH_TEAM
        return {
            "access_token": OAUTH_TOKEN,
            "token_type": "bot",
            "scope": "commands,chat:write",
            "bot_user_id": "UBOT2",
            "app_id": "A1",
            "team": {"id": OAUTH_TEAM, "name": "OAuth Team"},
            "enterprise": None,
            "is_enterprise_install": False,
            "authed_user": {"id": "UINSTALLER"},
        }


def _view(call: Call) -> dict[str, Any]:
    view = call.args["view"]
    return json.loads(view) if isinstance(view, str) else view


@dataclass
class Response:
    status: int
    body: str
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


class SlackSender:
    """Sends what Slack sends to an app's /slack/events, signed with the signing secret."""

    def __init__(self, url: str, fake: FakeSlack, secret: str = SIGNING_SECRET) -> None:
        self.url = url
        self.fake = fake
        self.verifier = SignatureVerifier(secret)
        self._ids = itertools.count(1)

    async def send(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature
            or self.verifier.generate_signature(timestamp=ts, body=body),
        }
        async with aiohttp.ClientSession() as s, s.post(self.url, data=body, headers=headers) as r:
            return Response(r.status, await r.text(), time.monotonic())

    def command_body(
        self, text: str, *, user: str, channel: str, team: str = TEAM
    ) -> dict[str, str]:
        n = next(self._ids)
        return {
            "token": "legacy",
            "team_id": team,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/cruscible",
            "text": text,
            "api_app_id": "A1",
            "response_url": self.fake.response_url(f"cmd-{n}"),
            "trigger_id": f"trigger-{n}",
        }

    async def command(
        self, text: str, *, user: str = "U1", channel: str = "C1", team: str = TEAM
    ) -> Response:
        body = urlencode(self.command_body(text, user=user, channel=channel, team=team))
        return await self.send(body, "application/x-www-form-urlencoded")

    async def interaction(self, payload: dict[str, Any]) -> Response:
        body = urlencode({"payload": json.dumps(payload)})
        return await self.send(body, "application/x-www-form-urlencoded")

    async def press(self, action_id: str, *, user: str, channel: str, message_ts: str) -> Response:
        n = next(self._ids)
        return await self.interaction(
            {
                "type": "block_actions",
                "team": {"id": TEAM, "domain": "test"},
                "user": {
                    "id": user,
                    "username": user.lower(),
                    "name": user.lower(),
                    "team_id": TEAM,
                },
                "api_app_id": "A1",
                "token": "legacy",
                "trigger_id": f"trigger-{n}",
                "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
                "channel": {"id": channel, "name": "daily"},
                "message": {"ts": message_ts, "text": "daily"},
                "response_url": self.fake.response_url(f"action-{n}"),
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": "b",
                        "value": action_id,
                        "action_ts": "1",
                    }
                ],
            }
        )

    async def submit_form(
        self, view: dict[str, Any], values: dict[str, Any], *, user: str
    ) -> Response:
        return await self.interaction(
            {
                "type": "view_submission",
                "team": {"id": TEAM, "domain": "test"},
                "user": {
                    "id": user,
                    "username": user.lower(),
                    "name": user.lower(),
                    "team_id": TEAM,
                },
                "api_app_id": "A1",
                "token": "legacy",
                "trigger_id": "trigger-view",
                "view": {**view, "id": "V1", "team_id": TEAM, "state": {"values": values}},
            }
        )

    async def event(self, event: dict[str, Any]) -> Response:
        body = {
            "token": "legacy",
            "team_id": TEAM,
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"Ev{next(self._ids)}",
            "event_time": int(time.time()),
            "event": event,
            "authorizations": [{"team_id": TEAM, "user_id": "UBOT", "is_bot": True}],
        }
        return await self.send(json.dumps(body), "application/json")
