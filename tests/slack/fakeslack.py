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

from tests.slack import blockkit

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
TEAM = "T0TEST"
OAUTH_TEAM, OAUTH_TOKEN, OAUTH_CODE = "T0OAUTH", "xoxb-oauth-team", "code-123"
NO_AUTH = {"oauth.v2.access", "apps.connections.open"}
WAIT_S = 15.0
TEXT_MAX = 40_000  # chat.postMessage `text` (msg_too_long)
UPLOAD_MAX = 2**30  # a file's bytes (files.getUploadURLExternal)
RESPONSE_URL_USES, RESPONSE_URL_TTL_S = 5, 30 * 60
TRIGGER_TTL_S = 3.0
ROTATED_LIFETIME_S = 12 * 3600  # a rotating token lives 12 hours
# the channels every test may use; others are made with add_channel
DEFAULT_CHANNELS = ["C1", "CDAILY", "CHOME", "COTHER", "CRATE", "CSCHED", "CCONTEST", "CRACE"]
DEFAULT_CHANNELS += ["COAUTH"]


class Refuse(Exception):
    """Answer ``{"ok": false, "error": ...}`` as Slack does (with its ``response_metadata``
    messages, when it gives them)."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.messages = messages or []


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
class Channel:
    """A conversation in the fake workspace: its kind, and whether the bot is in it."""

    id: str
    name: str
    private: bool = False
    archived: bool = False
    member: bool = True

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": True,
            "is_private": self.private,
            "is_archived": self.archived,
            "is_member": self.member,
        }


@dataclass
class Interaction:
    """A response_url or trigger_id Slack handed to the app: when, and how often it was used."""

    issued: float = field(default_factory=time.monotonic)
    uses: int = 0


@dataclass
class FakeSlack:
    """Slack's Web API as far as Cruscible uses it, refusing what Slack refuses (each rule cites
    the doc it follows). Channels must exist (``add_channel``; ``DEFAULT_CHANNELS`` do)."""

    admins: set[str] = field(default_factory=set)
    dm_closed: set[str] = field(default_factory=set)
    rate_limited: dict[str, int] = field(default_factory=dict)  # method → 429s to answer first
    retry_after_s: int = 0  # the Retry-After of those 429s
    server_errors: dict[str, int] = field(default_factory=dict)  # method → 503s to answer first
    tokens: dict[str, str] = field(default_factory=lambda: {BOT_TOKEN: TEAM})
    scopes: set[str] = field(default_factory=lambda: {"chat:write", "chat:write.public"})
    revoked: set[str] = field(default_factory=set)  # tokens of an uninstalled app
    expires: dict[str, float] = field(default_factory=dict)  # rotating token → wall-clock expiry
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token → team
    rotation: bool = False  # installs get expiring tokens (token rotation turned on)
    token_lifetime_s: int = ROTATED_LIFETIME_S
    channels: dict[str, Channel] = field(default_factory=dict)
    response_urls: dict[str, Interaction] = field(default_factory=dict)
    triggers: dict[str, Interaction] = field(default_factory=dict)
    trigger_ttl_s: float = TRIGGER_TTL_S
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (channel, ts)
    refused: list[Call] = field(default_factory=list)  # answered 429 or 5xx
    uploads: dict[str, bytes] = field(default_factory=dict)
    shared: dict[str, bytes] = field(default_factory=dict)  # file id -> bytes a user shared
    downloads: list[tuple[str, str | None]] = field(default_factory=list)  # (file id, token)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    sockets: int = 0  # Socket Mode connections accepted so far
    _runner: web.AppRunner | None = None
    _port: int = 0
    _socket: web.WebSocketResponse | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for channel_id in DEFAULT_CHANNELS:
            self.add_channel(channel_id)

    def add_channel(
        self,
        channel_id: str,
        name: str = "",
        *,
        private: bool | None = None,
        archived: bool = False,
        member: bool = True,
    ) -> Channel:
        """A channel in the workspace; ids starting with G are private unless told otherwise."""
        channel = Channel(
            channel_id,
            name or channel_id.lower(),
            channel_id.startswith("G") if private is None else private,
            archived,
            member,
        )
        self.channels[channel_id] = channel
        return channel

    def uninstall(self, team: str) -> None:
        """The app is removed from ``team``: its tokens answer ``token_revoked`` from now on."""
        for token, owner in list(self.tokens.items()):
            if owner == team:
                self.revoked.add(token)

    # -- server -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.post("/api/{method}", self._api),
                web.get("/api/{method}", self._api),
                web.post("/upload/{file_id}", self._upload),
                web.get("/files-pri/{file_id}/{name}", self._download),
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
        """A response_url handed to the app now (its 30 minutes and 5 uses start now)."""
        self.response_urls.setdefault(key, Interaction())
        return f"{self.base}/response/{key}"

    def trigger(self, trigger_id: str) -> str:
        """A trigger_id handed to the app now (it expires after ``trigger_ttl_s``)."""
        self.triggers.setdefault(trigger_id, Interaction())
        return trigger_id

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

    def share(self, name: str, content: bytes, *, size: int | None = None) -> dict[str, Any]:
        """A file a user shares (the ``files`` entry of a ``file_share`` message); downloadable
        with a bot token from ``url_private_download``: https://api.slack.com/types/file.
        ``size``: what Slack declares (the content's by default)."""
        file_id = f"F{next(self._ids)}"
        self.shared[file_id] = content
        url = f"{self.base}/files-pri/{file_id}/{name}"
        return {
            "id": file_id,
            "name": name,
            "size": len(content) if size is None else size,
            "url_private": url,
            "url_private_download": url + "?download",
        }

    async def _download(self, request: web.Request) -> web.Response:
        """Private file URLs need the token as a Bearer header
        (https://api.slack.com/types/file#authentication); without it Slack serves its login
        page, never the file."""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        file_id = request.match_info["file_id"]
        self.downloads.append((file_id, token))
        if token not in self.tokens or token in self.revoked or file_id not in self.shared:
            return web.Response(status=200, text="<html>Sign in to Slack</html>")
        return web.Response(body=self.shared[file_id])

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
        # 429 with Retry-After: https://api.slack.com/apis/rate-limits#headers
        if self.rate_limited.get(method):
            self.rate_limited[method] -= 1
            self.refused.append(call)
            body = {"ok": False, "error": "ratelimited"}
            headers = {"Retry-After": str(self.retry_after_s)}
            return web.json_response(body, status=429, headers=headers)
        if self.server_errors.get(method):  # Slack's own outage: an HTML 503, not JSON
            self.server_errors[method] -= 1
            self.refused.append(call)
            return web.Response(status=503, text="<html>Service Unavailable</html>")
        self.calls.append(call)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        try:
            if handler is None:
                raise Refuse("unknown_method")
            if method not in NO_AUTH:
                self._authorize(token)
            call.answer = {"ok": True, **handler(call)}
            return web.json_response(call.answer)
        except Refuse as exc:
            call.answer = {"ok": False, "error": str(exc)}
            if exc.messages:
                call.answer["response_metadata"] = {"messages": exc.messages}
            return web.json_response(call.answer)

    def _authorize(self, token: str | None) -> None:
        """Token errors: https://api.slack.com/methods/chat.postMessage#errors (``not_authed``,
        ``invalid_auth``, ``token_revoked``, ``token_expired``: a rotating token past its
        ``expires_in``, https://api.slack.com/authentication/rotation)."""
        if not token:
            raise Refuse("not_authed")
        if token in self.revoked:
            raise Refuse("token_revoked")
        if token not in self.tokens:
            raise Refuse("invalid_auth")
        if token in self.expires and time.time() >= self.expires[token]:
            raise Refuse("token_expired")

    def _blocks(self, call: Call, surface: str = "message") -> None:
        """Block Kit limits (``tests/slack/blockkit.py``), answered ``invalid_blocks``."""
        blocks = call.args.get("blocks")
        if blocks is None:
            return
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if found := blockkit.problems(blocks, surface):
            raise Refuse("invalid_blocks", [f"[ERROR] {p}" for p in found])

    def _channel(self, call: Call, *, post: bool = True) -> Channel:
        """The channel a call names. ``channel_not_found`` for one that does not exist, or a
        private one the bot is not in; ``not_in_channel`` for a public one it is not in without
        ``chat:write.public``; ``is_archived`` for an archived one — errors of
        https://api.slack.com/methods/chat.postMessage#errors."""
        channel = self.channels.get(call.channel)
        if channel is None or (channel.private and not channel.member):
            raise Refuse("channel_not_found")
        if post and channel.archived:
            raise Refuse("is_archived")
        if post and not channel.member and "chat:write.public" not in self.scopes:
            raise Refuse("not_in_channel")
        return channel

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        self.uploads[file_id] = data
        self.calls.append(
            Call("upload", {"file_id": file_id, "data": data.decode("latin-1")}, None)
        )
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        """A response_url takes 5 messages within 30 minutes, then answers 404 ``used_url`` or
        ``expired_url``: https://api.slack.com/interactivity/handling#message_responses."""
        key = request.match_info["key"]
        payload = await request.json()
        call = Call("response_url", {"key": key, **payload}, None)
        self.calls.append(call)
        issued = self.response_urls.get(key)
        if issued is None:
            return web.Response(status=404, text="invalid_url")
        if time.monotonic() - issued.issued > RESPONSE_URL_TTL_S:
            return web.Response(status=404, text="expired_url")
        if issued.uses >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        if blockkit.problems(payload.get("blocks", []), "message"):
            return web.Response(status=400, text="invalid_blocks")
        issued.uses += 1
        call.answer = {"ok": True}
        return web.Response(text="ok")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        self.sockets += 1
        self._connected.set()
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}
        )
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.socket_acks.append(json.loads(msg.data))
        return ws

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Push a Socket Mode envelope to the connected app; returns its id."""
        async with asyncio.timeout(WAIT_S):
            await self._connected.wait()
        assert self._socket is not None
        envelope_id = f"env-{next(self._ids)}"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": True,
        }
        if kind == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        await self._socket.send_json(envelope)
        return envelope_id

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before it closes a Socket Mode connection:
        https://api.slack.com/apis/socket-mode#disconnect."""
        assert self._socket is not None
        self._connected.clear()
        await self._socket.send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        )

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
        self._channel(call)
        thread = call.args.get("thread_ts")
        if thread and (call.channel, thread) not in self.messages:
            raise Refuse("thread_not_found")  # the parent message was deleted
        # "msg_too_long: Message text is too long" (over 40,000 characters):
        # https://api.slack.com/methods/chat.postMessage#errors
        if len(call.args.get("text") or "") > TEXT_MAX:
            raise Refuse("msg_too_long")
        self._blocks(call)
        ts = self._ts()
        self.messages[call.channel, ts] = call.args
        return {
            "channel": call.channel,
            "ts": ts,
            "message": {"text": call.args.get("text"), "ts": ts},
        }

    def m_chat_postEphemeral(self, call: Call) -> dict[str, Any]:
        # https://api.slack.com/methods/chat.postEphemeral#errors
        channel = self._channel(call)
        if not channel.member:
            raise Refuse("not_in_channel")
        self._blocks(call)
        return {"message_ts": self._ts()}

    def m_chat_update(self, call: Call) -> dict[str, Any]:
        # https://api.slack.com/methods/chat.update#errors
        self._channel(call)
        key = (call.channel, call.args["ts"])
        if key not in self.messages:  # never posted, or deleted since
            raise Refuse("message_not_found")
        if len(call.args.get("text") or "") > TEXT_MAX:
            raise Refuse("msg_too_long")
        self._blocks(call)
        self.messages[key] = call.args
        return {"channel": call.channel, "ts": call.args["ts"], "text": call.args.get("text")}

    def m_conversations_open(self, call: Call) -> dict[str, Any]:
        user = call.args["users"]
        if user in self.dm_closed:
            raise Refuse("cannot_dm_user")
        channel = self.channels.setdefault(f"D{user}", Channel(f"D{user}", user.lower()))
        return {"channel": {"id": channel.id}}

    def m_conversations_info(self, call: Call) -> dict[str, Any]:
        """https://api.slack.com/methods/conversations.info: a private channel the bot is not
        in is as unknown to it as a deleted one (``channel_not_found``)."""
        return {"channel": self._channel(call, post=False).info()}

    def m_conversations_join(self, call: Call) -> dict[str, Any]:
        """Only public channels can be joined: https://api.slack.com/methods/conversations.join."""
        channel = self.channels.get(call.channel)
        if channel is None:
            raise Refuse("channel_not_found")
        if channel.private:
            raise Refuse("method_not_supported_for_channel_type")
        if channel.archived:
            raise Refuse("is_archived")
        channel.member = True
        return {"channel": channel.info()}

    def m_users_info(self, call: Call) -> dict[str, Any]:
        user = call.args["user"]
        return {"user": {"id": user, "name": user.lower(), "is_admin": user in self.admins}}

    def m_views_open(self, call: Call) -> dict[str, Any]:
        """A trigger_id works once, within 3 seconds: https://api.slack.com/interactivity/handling#modal_responses
        (``expired_trigger_id``, ``exchanged_trigger_id``: https://api.slack.com/methods/views.open#errors)."""
        trigger = self.triggers.get(call.args.get("trigger_id", ""))
        if trigger is None:
            raise Refuse("invalid_trigger_id")
        if time.monotonic() - trigger.issued > self.trigger_ttl_s:
            raise Refuse("expired_trigger_id")
        if trigger.uses:
            raise Refuse("exchanged_trigger_id")
        trigger.uses += 1
        view = _view(call)
        if blockkit.problems(view.get("blocks"), "modal"):
            raise Refuse("invalid_blocks")
        return {"view": {"id": "V1", **view}}

    def m_views_publish(self, call: Call) -> dict[str, Any]:
        view = _view(call)
        if blockkit.problems(view.get("blocks"), "home"):
            raise Refuse("invalid_blocks")
        return {"view": {"id": "VHOME", **view}}

    def m_files_getUploadURLExternal(self, call: Call) -> dict[str, Any]:
        """``length`` is required; 0 (an empty file) answers ``missing_argument``:
        https://docs.slack.dev/reference/methods/files.getUploadURLExternal/ — and a file over
        Slack's 1 GB maximum (https://slack.com/help/articles/201330736-Add-files-to-Slack)
        answers ``file_upload_size_restricted``."""
        length = int(call.args.get("length") or 0)
        if length <= 0:
            raise Refuse("missing_argument")
        if length > UPLOAD_MAX:
            raise Refuse("file_upload_size_restricted")
        file_id = f"F{next(self._ids)}"
        return {"upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def m_files_completeUploadExternal(self, call: Call) -> dict[str, Any]:
        if call.channel and not self._channel(call).member:  # sharing needs the bot there
            raise Refuse("not_in_channel")
        return {
            "files": [{"id": f["id"], "title": f["title"]} for f in json.loads(call.args["files"])]
        }

    def m_apps_connections_open(self, call: Call) -> dict[str, Any]:
        if call.token != APP_TOKEN:
            raise Refuse("invalid_auth")
        return {"url": f"ws://127.0.0.1:{self._port}/socket"}

    def m_oauth_v2_access(self, call: Call) -> dict[str, Any]:
        """The install (``code``) and, with token rotation, the refresh (``grant_type=
        refresh_token``): https://api.slack.com/authentication/rotation."""
        if call.args.get("grant_type") == "refresh_token":
            team = self.refresh_tokens.pop(call.args.get("refresh_token", ""), None)
            if team is None:
                raise Refuse("invalid_refresh_token")
            return self._rotated(team)
        if call.args.get("code") != OAUTH_CODE:
            raise Refuse("invalid_code")
        if self.rotation:
            return {**self._installed(), **self._rotated(OAUTH_TEAM)}
        self.tokens[OAUTH_TOKEN] = OAUTH_TEAM
        return {**self._installed(), "access_token": OAUTH_TOKEN}

    def _installed(self) -> dict[str, Any]:
        return {
            "token_type": "bot",
            "scope": "commands,chat:write",
            "bot_user_id": "UBOT2",
            "app_id": "A1",
            "team": {"id": OAUTH_TEAM, "name": "OAuth Team"},
            "enterprise": None,
            "is_enterprise_install": False,
            "authed_user": {"id": "UINSTALLER"},
        }

    def _rotated(self, team: str) -> dict[str, Any]:
        """A fresh ``xoxe.xoxb-`` token (valid ``token_lifetime_s``) and its refresh token."""
        n = next(self._ids)
        token, refresh = f"xoxe.xoxb-{team}-{n}", f"xoxe-1-{team}-{n}"
        self.tokens[token] = team
        self.expires[token] = time.time() + self.token_lifetime_s
        self.refresh_tokens[refresh] = team
        return {
            "access_token": token,
            "refresh_token": refresh,
            "expires_in": self.token_lifetime_s,
            "token_type": "bot",
            "team": {"id": team, "name": "OAuth Team"},
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
        retry: tuple[int, str] | None = None,
    ) -> Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature
            or self.verifier.generate_signature(timestamp=ts, body=body),
        }
        if retry is not None:
            headers["X-Slack-Retry-Num"], headers["X-Slack-Retry-Reason"] = str(retry[0]), retry[1]
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
            "trigger_id": self.fake.trigger(f"trigger-{n}"),
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
                "trigger_id": self.fake.trigger(f"trigger-{n}"),
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

    async def event(
        self,
        event: dict[str, Any],
        *,
        team: str = TEAM,
        event_id: str | None = None,
        retry: tuple[int, str] | None = None,
    ) -> Response:
        """An Events API delivery; ``retry`` = (``X-Slack-Retry-Num``, ``X-Slack-Retry-Reason``)
        as Slack sends when it delivers ``event_id`` again:
        https://api.slack.com/apis/events-api#retries."""
        body = {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids)}",
            "event_time": int(time.time()),
            "event": event,
            "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}],
        }
        return await self.send(json.dumps(body), "application/json", retry=retry)

    async def command_again(self, body: dict[str, str], retry: tuple[int, str]) -> Response:
        """The same slash command delivered again (as a Socket Mode redelivery would)."""
        return await self.send(urlencode(body), "application/x-www-form-urlencoded", retry=retry)
