"""A fake Discord server on loopback that the real discord.py client (2.5-2.7) talks to.

REST under ``/api/v10``, a websocket gateway at ``/gateway`` (plain text JSON frames) and a CDN under
``/cdn/attachments/...``, all served by one aiohttp app on ``127.0.0.1`` port 0. Every request is recorded in
``FakeDiscord.requests`` so a test can inspect what the bot sent. Discord rules that matter to a bot are enforced:
the 3 s acknowledgement deadline (10062), 15 minute interaction tokens (50027), the per-interaction upload limit
(40005) and 429s on demand. Time for those rules runs on ``FakeDiscord.now()``: the real monotonic clock plus an
offset the test moves with ``advance_clock``. See DESIGN.md, "Testing against Discord without a network".

Usage::

    async with FakeDiscord() as fake, patched_discord(fake):
        client = MyClient(intents=discord.Intents.none())
        task = asyncio.create_task(client.start(fake.token))
        await fake.wait_ready()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "ACK_DEADLINE_S",
    "TOKEN_LIFETIME_S",
    "FakeDiscord",
    "GatewayEvent",
    "RecordedFile",
    "RecordedRequest",
    "patched_discord",
]

API_PREFIX = "/api/v10"
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_EPOCH = "2024-01-01T00:00:00.000000+00:00"


@dataclass
class RecordedFile:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request the client made. ``path`` is relative to ``/api/v10`` for REST, absolute otherwise."""

    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)
    status: int = 0
    response: Any = None

    @property
    def payload(self) -> Any:
        """The JSON body, whether sent plain or as ``payload_json`` in a multipart body."""
        if self.json is not None:
            return self.json
        raw = self.fields.get("payload_json")
        return json.loads(raw) if raw is not None else None


@dataclass
class GatewayEvent:
    """One frame the client sent on the gateway (``op``, ``d``) plus the query string of its connection."""

    op: int
    d: Any
    query: dict[str, str]


@dataclass
class _Interaction:
    id: str
    token: str
    created: float
    size_limit: int
    acked: bool = False
    original_message: dict[str, Any] | None = None


class _JSONError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py compares the header to exactly "application/json"; json_response would add "; charset=utf-8".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


class FakeDiscord:
    """A fake Discord (REST + gateway + CDN) for one bot, one guild and one text channel."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        heartbeat_interval_ms: int = 2000,
        guild_name: str = "Test Guild",
        channel_name: str = "general",
    ) -> None:
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.app_id = self.snowflake()
        self.bot_user = self._user(self.app_id, "nst-bot", bot=True)
        self.owner_user = self._user(self.snowflake(), "owner")
        self.user = self._user(self.snowflake(), "tester")
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.guild_name = guild_name
        self.channel_name = channel_name
        self.upload_limit = DEFAULT_UPLOAD_LIMIT

        self.requests: list[RecordedRequest] = []
        self.gateway_events: list[GatewayEvent] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.interactions: dict[str, _Interaction] = {}
        self.identify_count = 0
        self.resume_count = 0
        self.session_id = "fake-session-1"

        self._clock_offset = 0.0
        self._rate_limits: list[tuple[str, re.Pattern[str], float]] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Condition()
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{tail:.*}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------- helpers
    def snowflake(self) -> str:
        return str(next(self._ids))

    def now(self) -> float:
        """The fake's clock (seconds): real monotonic time plus everything passed to ``advance_clock``."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds

    def rate_limit_next(self, method: str, path_pattern: str, retry_after: float = 0.1) -> None:
        """Answer the next request matching ``method`` and the regex ``path_pattern`` (searched) with a 429."""
        self._rate_limits.append((method.upper(), re.compile(path_pattern), retry_after))

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str = "image/png",
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Serve ``data`` on the CDN and return a Discord attachment object for it."""
        att_id = self.snowflake()
        url = f"{self.base_url}/cdn/attachments/{self.channel_id}/{att_id}/{filename}"
        self.cdn[f"{self.channel_id}/{att_id}/{filename}"] = (data, content_type)
        return {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "width": width,
            "height": height,
            "content_type": content_type,
        }

    def _user(self, uid: str, name: str, *, bot: bool = False) -> dict[str, Any]:
        return {
            "id": uid,
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
            "flags": 0,
        }

    def _member(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": user,
            "roles": [],
            "flags": 0,
            "joined_at": _EPOCH,
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": str((1 << 41) - 1),
        }

    def _channel(self) -> dict[str, Any]:
        return {
            "id": self.channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": self.channel_name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _guild(self) -> dict[str, Any]:
        return {
            "id": self.guild_id,
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": self.owner_user["id"],
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "roles": [
                {
                    "id": self.guild_id,
                    "name": "@everyone",
                    "color": 0,
                    "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                    "hoist": False,
                    "position": 0,
                    "permissions": str((1 << 41) - 1),
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "members": [self._member(self.bot_user), self._member(self.user)],
            "member_count": 3,
            "channels": [self._channel()],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": _EPOCH,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "application_id": None,
            "premium_progress_bar_enabled": False,
        }

    def _message(
        self,
        *,
        content: str = "",
        author: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        flags: int = 0,
        mid: str | None = None,
        interaction_id: str | None = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": mid or self.snowflake(),
            "type": 0 if interaction_id is None else 20,
            "content": content,
            "channel_id": self.channel_id,
            "guild_id": self.guild_id,
            "author": author or self.bot_user,
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "edited_timestamp": None,
            "flags": flags,
        }
        if interaction_id is not None:
            msg["webhook_id"] = self.app_id
            msg["application_id"] = self.app_id
        self.messages[msg["id"]] = msg
        return msg

    # ----------------------------------------------------------------- waiting
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_request(self, method: str, path_pattern: str, timeout: float = 5.0) -> RecordedRequest:
        """The first recorded, not yet returned request matching ``method`` and regex ``path_pattern``."""
        pattern = re.compile(path_pattern)

        def find() -> RecordedRequest | None:
            for i, req in enumerate(self.requests):
                if i not in self._consumed and req.method == method.upper() and pattern.search(req.path):
                    self._consumed.add(i)
                    return req
            return None

        async def waiter() -> RecordedRequest:
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests]
            raise AssertionError(f"no {method} {path_pattern} within {timeout}s; saw {seen}") from None

    async def wait_for_gateway(self, op: int, count: int = 1, timeout: float = 5.0) -> GatewayEvent:
        """Wait until the client has sent ``count`` gateway frames with opcode ``op``; return the last."""

        async def waiter() -> GatewayEvent:
            async with self._changed:
                while len(matches := [e for e in self.gateway_events if e.op == op]) < count:
                    await self._changed.wait()
                return matches[count - 1]

        return await asyncio.wait_for(waiter(), timeout)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until READY and GUILD_CREATE have been sent on the gateway."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    # ----------------------------------------------------------------- gateway
    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a DISPATCH (op 0) with the next sequence number on the current gateway connection."""
        if self._ws is None or self._ws.closed:
            raise RuntimeError("no gateway connection")
        self._seq += 1
        await self._send(self._ws, {"op": 0, "t": event, "s": self._seq, "d": data})

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the client should close and RESUME on ``resume_gateway_url``."""
        if self._ws is None or self._ws.closed:
            raise RuntimeError("no gateway connection")
        await self._send(self._ws, {"op": 7, "d": None})

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        query = dict(request.query)
        self._ws = ws
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, d = frame.get("op"), frame.get("d")
            self.gateway_events.append(GatewayEvent(op, d, query))
            if op == 1:
                await self._send(ws, {"op": 11})
            elif op == 2:
                self.identify_count += 1
                self.session_id = f"fake-session-{self.identify_count}"
                self._seq = 0
                await self.dispatch(
                    "READY",
                    {
                        "v": 10,
                        "user": {**self.bot_user, "verified": True, "mfa_enabled": False},
                        "guilds": [{"id": self.guild_id, "unavailable": True}],
                        "session_id": self.session_id,
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": self.app_id, "flags": 0},
                        "private_channels": [],
                        "relationships": [],
                        "presences": [],
                        "geo_ordered_rtc_regions": [],
                        "shard": [0, 1],
                    },
                )
                await self.dispatch("GUILD_CREATE", self._guild())
                self._ready.set()
            elif op == 6:
                self.resume_count += 1
                if d.get("session_id") != self.session_id:
                    await self._send(ws, {"op": 9, "d": False})
                else:
                    await self.dispatch("RESUMED", {})
            await self._notify()
        if self._ws is ws:
            self._ws = None
        return ws

    async def send_interaction(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        attachments: list[dict[str, Any]] | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        command_id: str | None = None,
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for slash command ``name``.

        ``options`` are plain option dicts (``{"name", "type", "value"}``); for attachment options pass
        ``{"name": ..., "type": 11, "value": attachment["id"]}`` and the attachment in ``attachments``.
        Returns the interaction payload (its ``id``/``token`` are known to the fake from now on).
        """
        iid = self.snowflake()
        token = f"itoken-{iid}"
        resolved: dict[str, Any] = {}
        if attachments:
            resolved["attachments"] = {a["id"]: a for a in attachments}
        if command_id is None:
            known = [c for cmds in self.commands.values() for c in cmds if c.get("name") == name]
            command_id = known[0]["id"] if known else self.snowflake()
        payload = {
            "id": iid,
            "application_id": self.app_id,
            "type": 2,
            "data": {
                "id": command_id,
                "name": name,
                "type": 1,
                "options": options or [],
                "resolved": resolved,
            },
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "channel": self._channel(),
            "member": self._member(user or self.user),
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 41) - 1),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
            "attachment_size_limit": attachment_size_limit,
        }
        self.interactions[token] = _Interaction(iid, token, self.now(), attachment_size_limit)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    # --------------------------------------------------------------------- CDN
    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.query)))
        entry = self.cdn.get(tail)
        if entry is None:
            self.requests[-1].status = 404
            await self._notify()
            return web.Response(status=404, text="not found")
        self.requests[-1].status = 200
        await self._notify()
        return web.Response(body=entry[0], content_type=entry[1])

    # -------------------------------------------------------------------- REST
    async def _record(self, request: web.Request, path: str) -> RecordedRequest:
        rec = RecordedRequest(request.method, path, dict(request.query))
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                data = await part.read()
                if part.filename is not None:
                    rec.files.append(
                        RecordedFile(part.name or "", part.filename, part.headers.get("Content-Type"), bytes(data))
                    )
                else:
                    rec.fields[part.name or ""] = data.decode()
        elif request.can_read_body:
            body = await request.read()
            if body:
                try:
                    rec.json = json.loads(body)
                except ValueError:
                    rec.fields["_raw"] = body.decode(errors="replace")
        return rec

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        rec = await self._record(request, path)
        self.requests.append(rec)
        try:
            for i, (method, pattern, retry_after) in enumerate(self._rate_limits):
                if method == rec.method and pattern.search(path):
                    del self._rate_limits[i]
                    rec.status = 429
                    rec.response = {
                        "message": "You are being rate limited.",
                        "retry_after": retry_after,
                        "global": False,
                    }
                    return _json(
                        rec.response,
                        status=429,
                        headers={
                            "Via": "1.1 google",
                            "Retry-After": str(max(1, round(retry_after))),
                            "X-RateLimit-Limit": "5",
                            "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset-After": str(retry_after),
                            "X-RateLimit-Bucket": "fake-bucket",
                            "X-RateLimit-Scope": "user",
                        },
                    )
            try:
                result = self._handle(rec)
            except _JSONError as e:
                rec.status = e.status
                rec.response = {"message": e.message, "code": e.code}
                return _json(rec.response, status=e.status)
            if result is None:
                rec.status = 204
                return web.Response(status=204)
            rec.status = 200
            rec.response = result
            return _json(result)
        finally:
            await self._notify()

    def _check_upload(self, rec: RecordedRequest, limit: int) -> None:
        for f in rec.files:
            if len(f.data) > limit:
                raise _JSONError(413, 40005, "Request entity too large")

    def _interaction_for_webhook(self, app: str, token: str) -> _Interaction:
        inter = self.interactions.get(token)
        if app != self.app_id or inter is None:
            raise _JSONError(404, 10015, "Unknown Webhook")
        if self.now() - inter.created > TOKEN_LIFETIME_S:
            raise _JSONError(401, 50027, "Invalid Webhook Token")
        return inter

    def _attachments_from(self, rec: RecordedRequest, payload: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for f in rec.files:
            att = self.add_attachment(f.data, f.filename or "file", f.content_type or "application/octet-stream")
            out.append(att)
        # keep attachments the payload lists by an id that is not a new upload index
        for a in payload.get("attachments") or []:
            aid = str(a.get("id"))
            if len(aid) > 5:
                out.append(a)
        return out

    def _message_from(
        self,
        rec: RecordedRequest,
        *,
        mid: str | None = None,
        interaction_id: str | None = None,
        old: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        payload = rec.payload or {}
        base = old or {}
        attachments = self._attachments_from(rec, payload) if (rec.files or "attachments" in payload) else None
        msg = self._message(
            content=payload.get("content", base.get("content", "")) or "",
            attachments=attachments if attachments is not None else base.get("attachments"),
            embeds=payload.get("embeds", base.get("embeds")),
            components=payload.get("components", base.get("components")),
            flags=payload.get("flags", base.get("flags", 0)) or 0,
            mid=mid,
            interaction_id=interaction_id,
        )
        if old is not None:
            msg["edited_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
        return msg

    def _handle(self, rec: RecordedRequest) -> Any:
        m, p = rec.method, rec.path
        if m == "GET" and p == "/users/@me":
            return {**self.bot_user, "verified": True, "mfa_enabled": False}
        if m == "GET" and p == "/oauth2/applications/@me":
            return {
                "id": self.app_id,
                "name": "nst-bot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner_user,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
                "bot": self.bot_user,
            }
        if m == "GET" and p == "/gateway":
            return {"url": self.gateway_url}
        if m == "GET" and p == "/gateway/bot":
            return {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }
        if match := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p):
            key = match.group(2) or "global"
            if m == "GET":
                return self.commands.get(key, [])
            if m == "PUT":
                stored = []
                for cmd in rec.json or []:
                    stored.append(
                        {
                            "id": self.snowflake(),
                            "application_id": self.app_id,
                            "version": self.snowflake(),
                            "type": 1,
                            "default_member_permissions": None,
                            "dm_permission": True,
                            "nsfw": False,
                            **({"guild_id": match.group(2)} if match.group(2) else {}),
                            **cmd,
                        }
                    )
                self.commands[key] = stored
                return stored
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._callback(rec, match.group(1), match.group(2))
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)/messages/@original", p):
            inter = self._interaction_for_webhook(match.group(1), match.group(2))
            if m == "GET":
                if inter.original_message is None:
                    raise _JSONError(404, 10008, "Unknown Message")
                return inter.original_message
            if m == "PATCH":
                self._check_upload(rec, inter.size_limit)
                old = inter.original_message
                msg = self._message_from(rec, mid=old["id"] if old else None, interaction_id=inter.id, old=old)
                inter.original_message = msg
                return msg
            if m == "DELETE":
                inter.original_message = None
                return None
        if (match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)", p)) and m == "POST":
            inter = self._interaction_for_webhook(match.group(1), match.group(2))
            self._check_upload(rec, inter.size_limit)
            return self._message_from(rec, interaction_id=inter.id)
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)/messages/(\d+)", p):
            inter = self._interaction_for_webhook(match.group(1), match.group(2))
            old = self.messages.get(match.group(3))
            if old is None:
                raise _JSONError(404, 10008, "Unknown Message")
            if m == "PATCH":
                self._check_upload(rec, inter.size_limit)
                return self._message_from(rec, mid=old["id"], interaction_id=inter.id, old=old)
            if m == "GET":
                return old
        if match := re.fullmatch(r"/channels/(\d+)/messages", p):
            if match.group(1) != self.channel_id:
                raise _JSONError(404, 10003, "Unknown Channel")
            if m == "POST":
                self._check_upload(rec, self.upload_limit)
                return self._message_from(rec)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            old = self.messages.get(match.group(2))
            if old is None:
                raise _JSONError(404, 10008, "Unknown Message")
            if m == "PATCH":
                self._check_upload(rec, self.upload_limit)
                return self._message_from(rec, mid=old["id"], old=old)
            if m == "GET":
                return old
        if match := re.fullmatch(r"/channels/(\d+)/typing", p):
            return None
        raise _JSONError(404, 0, f"fake Discord has no route {m} {p}")

    def _callback(self, rec: RecordedRequest, iid: str, token: str) -> Any:
        inter = self.interactions.get(token)
        if inter is None or inter.id != iid or self.now() - inter.created > ACK_DEADLINE_S:
            raise _JSONError(404, 10062, "Unknown interaction")
        if inter.acked:
            raise _JSONError(400, 40060, "Interaction has already been acknowledged.")
        self._check_upload(rec, inter.size_limit)
        inter.acked = True
        payload = rec.payload or {}
        rtype = payload.get("type")
        data = payload.get("data") or {}
        flags = data.get("flags", 0) or 0
        info: dict[str, Any] = {
            "id": iid,
            "type": 2,
            "activity_instance_id": None,
            "response_message_id": None,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": bool(flags & 64),
        }
        resource: dict[str, Any] | None = None
        if rtype in (4, 5):
            fake_rec = RecordedRequest(rec.method, rec.path, rec.query, json=data, files=rec.files)
            msg = self._message_from(fake_rec, interaction_id=iid)
            if rtype == 5:
                msg["flags"] = (msg["flags"] or 0) | 128  # LOADING
            inter.original_message = msg
            info["response_message_id"] = msg["id"]
            resource = {"type": rtype, "message": msg}
        elif rtype is not None:
            resource = {"type": rtype}
        if rec.query.get("with_response") not in ("1", "true", "True"):
            return None
        out: dict[str, Any] = {"interaction": info}
        if resource is not None:
            out["resource"] = resource
        return out


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base and gateway at ``fake``; restore both afterwards."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_fake() -> AsyncIterator[FakeDiscord]:
    """``async with running_fake() as fake``: a started FakeDiscord with discord.py pointed at it."""
    async with FakeDiscord() as fake:
        with patched_discord(fake):
            yield fake
