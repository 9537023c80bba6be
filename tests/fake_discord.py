"""A fake Discord server on loopback that the real discord.py client (2.5-2.7) talks to.

REST under ``/api/v10``, a websocket gateway at ``/gateway`` (plain text JSON frames) and a CDN under
``/cdn/attachments/...``, all served by one aiohttp app on ``127.0.0.1`` port 0. Every request is recorded in
``FakeDiscord.requests`` so a test can inspect what the bot sent. Discord rules that matter to a bot are enforced:
the 3 s acknowledgement deadline (10062), 15 minute interaction tokens (50027), the per-interaction upload limit
(40005), 429s on demand, 403s on demand (``channel_posts_forbidden``: 50013, ``dms_forbidden``: 50007), follow-ups
only after the initial response, ephemeral messages invisible to channel routes, only components that exist (and
are enabled) on a stored message can be clicked, and message nonces: a channel or DM post with ``enforce_nonce`` that
repeats a nonce of the same author in the same channel within ``NONCE_WINDOW_S`` gets the first message back instead
of a new one (404 if that one was deleted), and a nonce over 25 characters is refused (400, 50035). Time for those
rules runs on ``FakeDiscord.now()``: the real monotonic clock plus an offset the test moves with ``advance_clock``.
See DESIGN.md, "Testing against Discord without a network".

What a test can make a user do: ``send_interaction`` (slash command), ``send_autocomplete``, ``send_component``
(button click / select), ``send_message_command`` (message context menu), ``post_user_message``; with a second
member from ``add_user`` and ``permissions=`` for the invoking member. What it can inspect: ``requests``,
``messages`` (every message, by id, current version), ``messages_in_channel``, ``last_edit_of``,
``message_history``, ``components_of``, ``wait_for_response`` (the callback the bot answered an interaction with).

Usage::

    async with FakeDiscord() as fake, patched_discord(fake):
        client = MyClient(intents=discord.Intents.none())
        task = asyncio.create_task(client.start(fake.token))
        await fake.wait_ready()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "ACK_DEADLINE_S",
    "ALL_PERMISSIONS",
    "EPHEMERAL",
    "LOADING",
    "NONCE_WINDOW_S",
    "TOKEN_LIFETIME_S",
    "ErrorRecorder",
    "FakeDiscord",
    "FakeInteraction",
    "GatewayEvent",
    "RecordedFile",
    "RecordedRequest",
    "patched_discord",
    "running_fake",
]

API_PREFIX = "/api/v10"
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
#: Discord remembers a message nonce for "a few minutes" (enforce_nonce); the longest nonce it takes.
NONCE_WINDOW_S = 5 * 60.0
MAX_NONCE_LENGTH = 25
ALL_PERMISSIONS = (1 << 41) - 1
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
_EPOCH = "2024-01-01T00:00:00.000000+00:00"

# Interaction type -> the callback (response) types Discord accepts for it.
_CALLBACK_TYPES: dict[int, frozenset[int]] = {
    2: frozenset({4, 5, 9}),  # APPLICATION_COMMAND: message, deferred message, modal
    3: frozenset({4, 5, 6, 7, 9}),  # MESSAGE_COMPONENT: + deferred update, update message
    4: frozenset({8}),  # APPLICATION_COMMAND_AUTOCOMPLETE: autocomplete result
    5: frozenset({4, 5, 6, 7}),  # MODAL_SUBMIT
}
# Component types whose interaction data carries ``values`` (string, user, role, mentionable, channel selects).
_SELECT_TYPES = frozenset({3, 5, 6, 7, 8})


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


class ErrorRecorder(logging.Handler):
    """Keeps every ERROR record logged while attached (discord.py's task exceptions and command errors, gateway
    failures, the bot's own): a test fixture fails when there is any, since discord.py only logs them."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FakeInteraction:
    """What the fake knows about one interaction it dispatched: ``FakeDiscord.interactions[token]``.

    ``kind`` is the interaction type (2 command, 3 component, 4 autocomplete); ``message_id`` the message a
    component interaction came from; ``response`` the callback the bot answered with (``{"type", "data"}``).
    ``original_message`` is always the current version in ``FakeDiscord.messages`` (edits through
    ``/messages/@original``, ``/messages/{id}`` or a type 7 callback all show up in both).
    """

    id: str
    token: str
    kind: int
    created: float
    size_limit: int
    channel_id: str
    messages: dict[str, dict[str, Any]] = field(repr=False)
    message_id: str | None = None
    message_type: int = 20
    acked: bool = False
    original_id: str | None = None
    response: dict[str, Any] | None = None

    @property
    def original_message(self) -> dict[str, Any] | None:
        """The original response as stored now (``None`` before the bot responded or after it was deleted)."""
        return self.messages.get(self.original_id) if self.original_id is not None else None

    @original_message.setter
    def original_message(self, msg: dict[str, Any] | None) -> None:
        if msg is None:
            self.original_id = None
        else:
            self.original_id = msg["id"]
            self.messages[msg["id"]] = msg


_Interaction = FakeInteraction  # the name before it was public


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


def _truthy(value: str | None) -> bool:
    return value in ("1", "true", "True")


def _walk_components(components: list[Any]) -> Iterator[dict[str, Any]]:
    """Every component dict in a message's ``components``, depth first (rows, containers, sections, labels)."""
    for comp in components or []:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk_components(comp.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                yield from _walk_components([comp[key]])


class FakeDiscord:
    """A fake Discord (REST + gateway + CDN) for one bot, one guild, one text channel and any number of DMs."""

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
        #: a second text channel of the guild ("art"), for per-channel rules; interactions come from ``channel_id``
        #: unless a sender is given ``channel_id=fake.other_channel_id``
        self.other_channel_id = self.snowflake()
        self.text_channels = {self.channel_id: channel_name, self.other_channel_id: "art"}
        self.upload_limit = DEFAULT_UPLOAD_LIMIT
        #: permissions the bot has in interactions (``interaction.app_permissions``)
        self.app_permissions = ALL_PERMISSIONS
        #: when True, ``POST /channels/{guild channel}/messages`` answers 403 50013 Missing Permissions
        self.channel_posts_forbidden = False
        #: when True, ``POST /channels/{dm channel}/messages`` answers 403 50007 Cannot send messages to this user
        self.dms_forbidden = False
        #: when True, a new gateway connection is refused (503): Discord's gateway is out of reach
        self.gateway_refused = False

        self.requests: list[RecordedRequest] = []
        self.gateway_events: list[GatewayEvent] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        #: every message (channel, DM, interaction responses, follow-ups, ephemeral ones) by id, current version
        self.messages: dict[str, dict[str, Any]] = {}
        #: every version of every message by id, the first one as created (deleted messages stay here)
        self.message_versions: dict[str, list[dict[str, Any]]] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        #: every user the fake knows (bot, guild owner, ``user``, ``add_user`` ones) by id
        self.users: dict[str, dict[str, Any]] = {u["id"]: u for u in (self.bot_user, self.owner_user, self.user)}
        #: DM channels opened with ``POST /users/@me/channels``, by channel id
        self.dm_channels: dict[str, dict[str, Any]] = {}
        self.identify_count = 0
        self.resume_count = 0
        self.session_id = "fake-session-1"

        #: (channel id, author id, nonce) -> (message id, fake time it was posted), for ``enforce_nonce``
        self._nonces: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._member_ids: list[str] = [self.bot_user["id"], self.user["id"]]
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
        channel_id: str | None = None,
    ) -> dict[str, Any]:
        """Serve ``data`` on the CDN and return a Discord attachment object for it."""
        att_id = self.snowflake()
        key = f"{channel_id or self.channel_id}/{att_id}/{filename}"
        url = f"{self.base_url}/cdn/attachments/{key}"
        self.cdn[key] = (data, content_type)
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

    def add_user(self, name: str) -> dict[str, Any]:
        """A new guild member (a user dict) to pass as ``user=`` to the ``send_*`` methods.

        Users added before the client logs in are in GUILD_CREATE's member list; later ones reach the client only
        inside the interactions they make (which is all discord.py needs to build the ``Member``).
        """
        user = self._user(self.snowflake(), name)
        self.users[user["id"]] = user
        self._member_ids.append(user["id"])
        return user

    def post_user_message(
        self,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
        author: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a message a user (default ``self.user``) posted in the guild channel and return it.

        ``attachments`` are objects from ``add_attachment``. Nothing is sent on the gateway: use the message as the
        target of ``send_message_command`` or fetch it through REST.
        """
        return self._new_message(
            self.channel_id, content=content, author=author or self.user, attachments=list(attachments or [])
        )

    def messages_in_channel(
        self, channel_id: str | None = None, *, include_interactions: bool = False
    ) -> list[dict[str, Any]]:
        """The bot's messages in ``channel_id`` (default: the guild channel) in posting order, current versions.

        By default only what the bot posted through ``/channels/{id}/messages`` (no interaction responses or
        follow-ups, no user messages); ``include_interactions=True`` adds the bot's interaction messages, ephemeral
        ones included.
        """
        cid = channel_id or self.channel_id
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == cid
            and m["author"]["id"] == self.app_id
            and (include_interactions or "webhook_id" not in m)
        ]

    def last_edit_of(self, message_id: str) -> dict[str, Any]:
        """The current stored version of message ``message_id`` (after all edits); KeyError if there is none."""
        try:
            return self.messages[str(message_id)]
        except KeyError:
            raise KeyError(
                f"no message {message_id} (deleted or never created); known: {list(self.messages)}"
            ) from None

    def message_history(self, message_id: str) -> list[dict[str, Any]]:
        """Every version of message ``message_id``, oldest (as created) first."""
        return list(self.message_versions.get(str(message_id), []))

    def components_of(self, message_id: str) -> list[dict[str, Any]]:
        """The interactive components (those with a ``custom_id``) of a stored message, in display order."""
        msg = self.last_edit_of(message_id)
        return [c for c in _walk_components(msg.get("components") or []) if "custom_id" in c]

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

    def _member(self, user: dict[str, Any], permissions: int | None = None) -> dict[str, Any]:
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
            "permissions": str(ALL_PERMISSIONS if permissions is None else permissions),
        }

    def _channel(self, channel_id: str | None = None) -> dict[str, Any]:
        cid = channel_id or self.channel_id
        return {
            "id": cid,
            "type": 0,
            "guild_id": self.guild_id,
            "name": self.text_channels[cid],
            "position": list(self.text_channels).index(cid),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _dm_channel(self, recipient_id: str) -> dict[str, Any]:
        for channel in self.dm_channels.values():
            if channel["recipients"][0]["id"] == recipient_id:
                return channel
        channel = {
            "id": self.snowflake(),
            "type": 1,
            "recipients": [self.users[recipient_id]],
            "last_message_id": None,
            "flags": 0,
        }
        self.dm_channels[channel["id"]] = channel
        return channel

    def _guild(self) -> dict[str, Any]:
        members = [self._member(self.users[uid]) for uid in self._member_ids]
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
                    "permissions": str(ALL_PERMISSIONS),
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "members": members,
            "member_count": len(members) + (self.owner_user["id"] not in self._member_ids),
            "channels": [self._channel(cid) for cid in self.text_channels],
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

    # ---------------------------------------------------------------- messages
    def _store(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.messages[msg["id"]] = msg
        self.message_versions.setdefault(msg["id"], []).append(msg)
        return msg

    def _new_message(
        self,
        channel_id: str,
        *,
        content: str = "",
        author: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        flags: int = 0,
        message_type: int = 0,
        webhook: bool = False,
        message_reference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": self.snowflake(),
            "type": message_type,
            "content": content,
            "channel_id": channel_id,
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
        if channel_id not in self.dm_channels:
            msg["guild_id"] = self.guild_id
        if webhook:
            msg["webhook_id"] = self.app_id
            msg["application_id"] = self.app_id
        if message_reference is not None:
            ref_id = str(message_reference.get("message_id", ""))
            msg["type"] = 19  # REPLY
            msg["message_reference"] = {"type": 0, "channel_id": channel_id, **message_reference}
            msg["referenced_message"] = self.messages.get(ref_id)
        return self._store(msg)

    def _attachments(
        self,
        channel_id: str,
        payload: dict[str, Any],
        files: list[RecordedFile],
        old: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """The attachment list of a new or edited message: ``payload["attachments"]`` entries whose id is an upload
        index become new CDN attachments, other ids keep the existing attachment; unlisted uploads are appended."""
        uploads: dict[str, RecordedFile] = {}
        for f in files:
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            uploads[m.group(1) if m else str(len(uploads))] = f
        old_by_id = {str(a["id"]): a for a in old}
        out: list[dict[str, Any]] = []
        used: set[str] = set()

        def upload(index: str, entry: dict[str, Any]) -> dict[str, Any]:
            f = uploads[index]
            used.add(index)
            att = self.add_attachment(
                f.data,
                entry.get("filename") or f.filename or "file",
                f.content_type or "application/octet-stream",
                channel_id=channel_id,
            )
            if entry.get("description"):
                att["description"] = entry["description"]
            return att

        for entry in payload.get("attachments") or []:
            aid = str(entry.get("id"))
            if aid in uploads and aid not in used:
                out.append(upload(aid, entry))
            else:
                out.append(old_by_id.get(aid, entry))
        for index in uploads:
            if index not in used:
                out.append(upload(index, {}))
        return out

    def _create_from(
        self,
        channel_id: str,
        payload: dict[str, Any],
        files: list[RecordedFile],
        *,
        webhook: bool,
        message_type: int = 0,
        extra_flags: int = 0,
    ) -> dict[str, Any]:
        return self._new_message(
            channel_id,
            content=payload.get("content") or "",
            attachments=self._attachments(channel_id, payload, files, []),
            embeds=payload.get("embeds") or [],
            components=payload.get("components") or [],
            flags=(payload.get("flags") or 0) | extra_flags,
            message_type=message_type,
            webhook=webhook,
            message_reference=payload.get("message_reference"),
        )

    def _edit(self, old: dict[str, Any], payload: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]:
        """Store and return a new version of ``old`` with the fields ``payload`` sets (a PATCH or a type 7)."""
        msg = dict(old)
        if "content" in payload:
            msg["content"] = payload["content"] or ""
        if "embeds" in payload:
            msg["embeds"] = payload["embeds"] or []
        if "components" in payload:
            msg["components"] = payload["components"] or []
        if files or "attachments" in payload:
            msg["attachments"] = self._attachments(old["channel_id"], payload, files, old["attachments"])
        flags = (old.get("flags") or 0) & ~LOADING  # an edit ends "thinking..."
        if payload.get("flags") is not None:  # only SUPPRESS_EMBEDS can change on an existing message
            flags = (flags & ~SUPPRESS_EMBEDS) | (payload["flags"] & SUPPRESS_EMBEDS)
        msg["flags"] = flags
        msg["edited_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
        return self._store(msg)

    def _delete(self, message_id: str) -> None:
        self.messages.pop(message_id, None)

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

    async def wait_for_response(self, interaction: dict[str, Any] | str, timeout: float = 5.0) -> dict[str, Any]:
        """The accepted callback (``{"type", "data"}``) the bot answered ``interaction`` with.

        ``interaction`` is the payload a ``send_*`` method returned, or its token. For autocomplete the choices are
        in ``["data"]["choices"]``.
        """
        token = interaction if isinstance(interaction, str) else interaction["token"]
        inter = self.interactions[token]

        async def waiter() -> dict[str, Any]:
            async with self._changed:
                while inter.response is None:
                    await self._changed.wait()
                return inter.response

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(f"interaction {inter.id} got no accepted response within {timeout}s") from None

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

    async def drop_gateway(self) -> None:
        """Close the gateway connection and refuse new ones (``gateway_refused``) until a test allows them again."""
        self.gateway_refused = True
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.gateway_refused:
            return web.Response(status=503, text="gateway unavailable")
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

    # ------------------------------------------------------------ interactions
    def _command_ref(self, name: str, command_type: int) -> tuple[str, str | None]:
        """(command id, guild id or None) of a synced command; a new id and no guild if it was never synced.

        discord.py looks a command up among the tree's guild commands only when ``data.guild_id`` is set, so a
        command synced only to the guild gets it.
        """
        found: tuple[str, str | None] | None = None
        for key, cmds in self.commands.items():
            for cmd in cmds:
                if cmd.get("name") == name and cmd.get("type", 1) == command_type:
                    if key == "global":
                        return cmd["id"], None
                    found = found or (cmd["id"], key)
        return found or (self.snowflake(), None)

    def _register(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        channel_id: str | None = None,
        user: dict[str, Any] | None = None,
        permissions: int | None = None,
        message: dict[str, Any] | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        message_type: int = 20,
    ) -> dict[str, Any]:
        """Build an INTERACTION_CREATE payload and remember the interaction (ack deadline, token lifetime)."""
        iid = self.snowflake()
        token = f"itoken-{iid}"
        cid = channel_id or self.channel_id
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.app_id,
            "type": kind,
            "data": data,
            "channel_id": cid,
            "token": token,
            "version": 1,
            "app_permissions": str(self.app_permissions),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "attachment_size_limit": attachment_size_limit,
        }
        dm = self.dm_channels.get(cid)
        if dm is None:
            payload["guild_id"] = self.guild_id
            payload["guild_locale"] = "en-US"
            payload["channel"] = self._channel(cid)
            payload["member"] = self._member(user or self.user, permissions)
            payload["context"] = 0
        else:  # a bot DM: no guild, ``user`` instead of ``member``, no member permissions
            payload["channel"] = dm
            payload["user"] = user or dm["recipients"][0]
            payload["context"] = 1
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        self.interactions[token] = FakeInteraction(
            id=iid,
            token=token,
            kind=kind,
            created=self.now(),
            size_limit=attachment_size_limit,
            channel_id=cid,
            messages=self.messages,
            message_id=message["id"] if message is not None else None,
            message_type=message_type,
        )
        return payload

    async def send_interaction(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        attachments: list[dict[str, Any]] | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        command_id: str | None = None,
        user: dict[str, Any] | None = None,
        permissions: int | None = None,
        channel_id: str | None = None,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for slash command ``name`` (in ``channel_id``, default ``self.channel_id``).

        ``options`` are plain option dicts (``{"name", "type", "value"}``); for attachment options pass
        ``{"name": ..., "type": 11, "value": attachment["id"]}`` and the attachment in ``attachments``. A subcommand
        (or group) is an option of type 1 (2) holding the next level: ``[{"type": 1, "name": "save", "options":
        [...]}]``. ``user`` is who invokes it (default ``self.user``), ``permissions`` that member's permission bits
        in the channel (default: all). Returns the interaction payload (its ``id``/``token`` are known to the fake
        from now on).
        """
        resolved: dict[str, Any] = {}
        if attachments:
            resolved["attachments"] = {a["id"]: a for a in attachments}
        channels = [o["value"] for o in self._flat_options(options or []) if o.get("type") == 7]
        if channels:  # channel options arrive resolved, as Discord sends them
            unknown = [c for c in channels if c not in self.text_channels]
            if unknown:
                raise ValueError(f"channel option(s) {unknown} unknown; text channels: {list(self.text_channels)}")
            resolved["channels"] = {c: {"id": c, "type": 0, "name": self.text_channels[c],
                                        "permissions": str(ALL_PERMISSIONS), "parent_id": None} for c in channels}
        ref_id, guild_id = self._command_ref(name, 1)
        data: dict[str, Any] = {
            "id": command_id or ref_id,
            "name": name,
            "type": 1,
            "options": options or [],
            "resolved": resolved,
        }
        if guild_id is not None:
            data["guild_id"] = guild_id
        payload = self._register(
            2, data, channel_id=channel_id, user=user, permissions=permissions,
            attachment_size_limit=attachment_size_limit,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def send_autocomplete(
        self,
        name: str,
        options: list[dict[str, Any]],
        *,
        user: dict[str, Any] | None = None,
        permissions: int | None = None,
    ) -> dict[str, Any]:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) interaction for slash command ``name``.

        ``options`` are laid out as for ``send_interaction`` (subcommands nested); exactly one of them, at any
        depth, must have ``"focused": True`` (its ``value`` is what the user has typed so far, a string). The bot's
        answer is a type 8 callback: ``(await fake.wait_for_response(payload))["data"]["choices"]``.
        """
        focused = [o for o in self._flat_options(options) if o.get("focused")]
        if len(focused) != 1:
            raise ValueError(f"autocomplete needs exactly one option with 'focused': True, got {len(focused)}")
        ref_id, guild_id = self._command_ref(name, 1)
        data: dict[str, Any] = {"id": ref_id, "name": name, "type": 1, "options": options}
        if guild_id is not None:
            data["guild_id"] = guild_id
        payload = self._register(4, data, user=user, permissions=permissions)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    @staticmethod
    def _flat_options(options: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for opt in options:
            yield opt
            yield from FakeDiscord._flat_options(opt.get("options") or [])

    async def send_message_command(
        self,
        name: str,
        message: dict[str, Any],
        *,
        user: dict[str, Any] | None = None,
        permissions: int | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> dict[str, Any]:
        """Dispatch a message context menu command (type 2 interaction, ``data.type`` 3) ``name`` on ``message``.

        ``message`` is a stored message (e.g. from ``post_user_message``); it arrives in ``data.resolved.messages``
        and ``data.target_id``, which discord.py hands to the ``ContextMenu`` callback as a ``discord.Message``.
        """
        ref_id, guild_id = self._command_ref(name, 3)
        data: dict[str, Any] = {
            "id": ref_id,
            "name": name,
            "type": 3,
            "target_id": message["id"],
            "resolved": {"messages": {message["id"]: copy.deepcopy(message)}},
        }
        if guild_id is not None:
            data["guild_id"] = guild_id
        payload = self._register(
            2,
            data,
            channel_id=message["channel_id"],
            user=user,
            permissions=permissions,
            attachment_size_limit=attachment_size_limit,
            message_type=23,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def send_component(
        self,
        message_id: str,
        custom_id: str,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        user: dict[str, Any] | None = None,
        permissions: int | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> dict[str, Any]:
        """Click a button (``component_type`` 2) or choose in a select (3 string, 5 user, 6 role, 7 mentionable,
        8 channel; ``values``) on stored message ``message_id``: dispatch a MESSAGE_COMPONENT (type 3) interaction.

        The interaction carries the full current message, as Discord sends it (discord.py rebuilds persistent
        views and ``DynamicItem``s from it). Like Discord, only a component that is on the message, of that type
        and not disabled can be used, and string select ``values`` must be among its options: anything else raises
        ``ValueError`` here (``KeyError`` if there is no such message). In a DM channel the interaction has
        ``user`` and no guild, as Discord sends it.
        """
        msg = self.messages.get(str(message_id))
        if msg is None:
            raise KeyError(
                f"send_component: no message {message_id} in fake.messages; the bot must have posted it (or store"
                f" it there) before a user can click it"
            )
        comps = [c for c in _walk_components(msg.get("components") or []) if c.get("custom_id") == custom_id]
        if not comps:
            have = [(c.get("type"), c["custom_id"]) for c in self.components_of(msg["id"])]
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {have}")
        comp = comps[0]
        if comp.get("type") != component_type:
            raise ValueError(f"component {custom_id!r} has type {comp.get('type')}, not {component_type}")
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; Discord does not send clicks on it")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if component_type in _SELECT_TYPES:
            data["values"] = list(values or [])
            if component_type == 3:
                allowed = [o.get("value") for o in comp.get("options") or []]
                bad = [v for v in data["values"] if v not in allowed]
                if bad:
                    raise ValueError(f"select {custom_id!r} has no option(s) {bad}; options are {allowed}")
        elif values is not None:
            raise ValueError("values are only for select menus (component_type 3, 5, 6, 7, 8)")
        payload = self._register(
            3,
            data,
            channel_id=msg["channel_id"],
            user=user,
            permissions=permissions,
            message=msg,
            attachment_size_limit=attachment_size_limit,
            message_type=0,
        )
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

    def _check_auth(self, path: str, authorization: str | None) -> None:
        """Bot routes need ``Authorization: Bot <token>``; interaction callbacks and webhooks carry their own token."""
        if path.startswith(("/interactions/", "/webhooks/")):
            return
        if authorization != f"Bot {self.token}":
            raise _JSONError(401, 0, "401: Unauthorized")

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
                self._check_auth(path, request.headers.get("Authorization"))
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

    def _interaction_for_webhook(self, app: str, token: str) -> FakeInteraction:
        inter = self.interactions.get(token)
        if app != self.app_id or inter is None:
            raise _JSONError(404, 10015, "Unknown Webhook")
        if self.now() - inter.created > TOKEN_LIFETIME_S:
            raise _JSONError(401, 50027, "Invalid Webhook Token")
        return inter

    def _handle(self, rec: RecordedRequest) -> Any:
        m, p = rec.method, rec.path
        payload: dict[str, Any] = rec.payload if isinstance(rec.payload, dict) else {}
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
        if m == "POST" and p == "/users/@me/channels":
            recipient = str(payload.get("recipient_id"))
            if recipient not in self.users:
                raise _JSONError(400, 50033, "Invalid Recipient(s)")
            return self._dm_channel(recipient)
        if (match := re.fullmatch(r"/users/(\d+)", p)) and m == "GET":
            user = self.users.get(match.group(1))
            if user is None:
                raise _JSONError(404, 10013, "Unknown User")
            return user
        if (match := re.fullmatch(r"/guilds/(\d+)/members/(\d+)", p)) and m == "GET":
            if match.group(1) != self.guild_id or match.group(2) not in self._member_ids:
                raise _JSONError(404, 10007, "Unknown Member")
            return self._member(self.users[match.group(2)])
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
                            "description": "",  # Discord answers "" for context menus, which send none
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
        if (match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)", p)) and m == "POST":
            inter = self._interaction_for_webhook(match.group(1), match.group(2))
            if not inter.acked:  # follow-ups need the initial response first
                raise _JSONError(404, 10015, "Unknown Webhook")
            self._check_upload(rec, inter.size_limit)
            msg = self._create_from(inter.channel_id, payload, rec.files, webhook=True, message_type=inter.message_type)
            return msg if _truthy(rec.query.get("wait")) else None
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", p):
            inter = self._interaction_for_webhook(match.group(1), match.group(2))
            mid = inter.original_id if match.group(3) == "@original" else match.group(3)
            old = self.messages.get(mid) if mid is not None else None
            # a webhook token reaches the app's webhook messages and the interaction's original message
            if old is None or (old.get("webhook_id") != self.app_id and mid != inter.original_id):
                raise _JSONError(404, 10008, "Unknown Message")
            if m == "GET":
                return old
            if m == "PATCH":
                self._check_upload(rec, inter.size_limit)
                return self._edit(old, payload, rec.files)
            if m == "DELETE":
                self._delete(old["id"])
                return None
        if match := re.fullmatch(r"/channels/(\d+)", p):
            cid = match.group(1)
            channel = self._channel(cid) if cid in self.text_channels else self.dm_channels.get(cid)
            if channel is None:
                raise _JSONError(404, 10003, "Unknown Channel")
            if m == "GET":
                return channel
        if match := re.fullmatch(r"/channels/(\d+)/messages", p):
            cid = match.group(1)
            if cid not in self.text_channels and cid not in self.dm_channels:
                raise _JSONError(404, 10003, "Unknown Channel")
            if m == "POST":
                if cid in self.text_channels and self.channel_posts_forbidden:
                    raise _JSONError(403, 50013, "Missing Permissions")
                if cid in self.dm_channels and self.dms_forbidden:
                    raise _JSONError(403, 50007, "Cannot send messages to this user")
                self._check_upload(rec, self.upload_limit)
                return self._post_with_nonce(cid, payload, rec.files)
            if m == "GET":
                return self._history(cid, rec.query)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            old = self.messages.get(match.group(2))
            # ephemeral messages exist only for the interaction webhook
            if old is None or old["channel_id"] != match.group(1) or (old.get("flags") or 0) & EPHEMERAL:
                raise _JSONError(404, 10008, "Unknown Message")
            if m == "GET":
                return old
            if m == "PATCH":
                if old["author"]["id"] != self.app_id:
                    raise _JSONError(403, 50005, "Cannot edit a message authored by another user")
                self._check_upload(rec, self.upload_limit)
                return self._edit(old, payload, rec.files)
            if m == "DELETE":
                self._delete(old["id"])
                return None
        if match := re.fullmatch(r"/channels/(\d+)/typing", p):
            return None
        raise _JSONError(404, 0, f"fake Discord has no route {m} {p}")

    def _post_with_nonce(self, channel_id: str, payload: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]:
        """A bot post in a channel or DM, honouring ``nonce`` / ``enforce_nonce`` as Discord does."""
        nonce = payload.get("nonce")
        if nonce is None:
            return self._create_from(channel_id, payload, files, webhook=False)
        nonce = str(nonce)
        if len(nonce) > MAX_NONCE_LENGTH:
            raise _JSONError(400, 50035, f"Invalid Form Body: nonce: Must be {MAX_NONCE_LENGTH} or fewer in length.")
        key = (channel_id, self.app_id, nonce)
        seen = self._nonces.get(key)
        if payload.get("enforce_nonce") and seen is not None and self.now() - seen[1] <= NONCE_WINDOW_S:
            first = self.messages.get(seen[0])
            if first is None:  # deleted meanwhile (discord.py documents NotFound for this)
                raise _JSONError(404, 10008, "Unknown Message")
            return first
        msg = self._create_from(channel_id, payload, files, webhook=False)
        msg["nonce"] = nonce
        self._nonces[key] = (msg["id"], self.now())
        return msg

    def _history(self, channel_id: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /channels/{id}/messages``: newest first, honouring ``limit``, ``before`` and ``after``."""
        found = [
            msg
            for msg in self.messages.values()
            if msg["channel_id"] == channel_id and not (msg.get("flags") or 0) & EPHEMERAL
        ]
        if "before" in query:
            found = [msg for msg in found if int(msg["id"]) < int(query["before"])]
        if "after" in query:
            found = [msg for msg in found if int(msg["id"]) > int(query["after"])]
        found.sort(key=lambda msg: int(msg["id"]), reverse=True)
        return found[: int(query.get("limit", 50))]

    def _callback(self, rec: RecordedRequest, iid: str, token: str) -> Any:
        inter = self.interactions.get(token)
        if inter is None or inter.id != iid or self.now() - inter.created > ACK_DEADLINE_S:
            raise _JSONError(404, 10062, "Unknown interaction")
        if inter.acked:
            raise _JSONError(400, 40060, "Interaction has already been acknowledged.")
        self._check_upload(rec, inter.size_limit)
        payload = rec.payload or {}
        rtype = payload.get("type")
        if rtype not in _CALLBACK_TYPES.get(inter.kind, frozenset()):
            raise _JSONError(400, 50035, f"Invalid Form Body: callback type {rtype} for interaction type {inter.kind}")
        data = payload.get("data") or {}
        inter.acked = True
        inter.response = {"type": rtype, "data": data}
        flags = data.get("flags", 0) or 0
        info: dict[str, Any] = {
            "id": iid,
            "type": inter.kind,
            "activity_instance_id": None,
            "response_message_id": None,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": bool(flags & EPHEMERAL),
        }
        resource: dict[str, Any] | None = None
        if rtype in (4, 5):
            msg = self._create_from(
                inter.channel_id,
                data,
                rec.files,
                webhook=True,
                message_type=inter.message_type,
                extra_flags=LOADING if rtype == 5 else 0,
            )
            inter.original_id = msg["id"]
            info["response_message_id"] = msg["id"]
            resource = {"type": rtype, "message": msg}
        elif rtype in (6, 7) and inter.message_id is not None:
            # a component's original message is the message the component is on
            inter.original_id = inter.message_id
            info["response_message_id"] = inter.message_id
            old = self.messages.get(inter.message_id)
            info["response_message_ephemeral"] = bool(old and (old.get("flags") or 0) & EPHEMERAL)
            resource = {"type": rtype}
            if rtype == 7 and old is not None:
                resource["message"] = self._edit(old, data, rec.files)
        elif rtype is not None:
            resource = {"type": rtype}
        if not _truthy(rec.query.get("with_response")):
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
