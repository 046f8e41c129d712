"""A fake Telegram Bot API server for end-to-end tests.

The real bot is started against it (as a subprocess via `env()`, or in-process via
`bot_kwargs()`), so every HTTP shape here is the one python-telegram-bot parses in
production: `{"ok": true, "result": ...}` on success and
`{"ok": false, "error_code": ..., "description": ...}` on failure, with the exact
descriptions Telegram uses for the errors the bot has to handle (message is not
modified, message to edit not found, 429 with `parameters.retry_after`, ...).

Why a fake and not mocks of `telegram.Bot`: the bot's correctness depends on details of
the wire protocol (long polling and offset confirmation, multipart uploads, file
downloads, local-mode file paths, error bodies); only an HTTP server exercises them.

Usage from pytest-asyncio (the server runs on the test's event loop)::

    async with FakeTelegram() as tg:          # or the `telegram` fixture (tests/conftest.py)
        voice = tg.add_file(ogg_bytes)
        tg.send_voice(42, 42, voice, duration=3)
        ...start the bot with tg.env() / tg.bot_kwargs()...
        await tg.wait_for(lambda t: t.sent_messages(42))

From synchronous code, `with FakeTelegram() as tg:` runs the server on a background
thread; every public method is then marshalled onto that thread, and
`wait_for_sync` replaces `wait_for`.

Deliberate simplifications (see `FakeTelegram` for the details): `parse_mode="HTML"` is
parsed and validated like Telegram does, Markdown/MarkdownV2 text is stored verbatim;
every user is assumed to be a member of every group; webhooks are recorded but updates
are only delivered through getUpdates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import http
import inspect
import json
import mimetypes
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from aiohttp import web

__all__ = [
    "CLOUD_DOWNLOAD_LIMIT",
    "DEFAULT_TOKEN",
    "Call",
    "ChatType",
    "FakeTelegram",
    "Fault",
    "FileRef",
    "SentDocument",
    "SentMessage",
    "UploadedFile",
]

JSON = dict[str, Any]
ChatType = Literal["private", "group", "supergroup"]
Responder = Callable[["Call"], web.StreamResponse | Awaitable[web.StreamResponse]]

DEFAULT_TOKEN = "123456:TEST"
CLOUD_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""api.telegram.org refuses getFile for larger files ("file is too big")."""

_MAX_TEXT = 4096
_MAX_CAPTION = 1024
_MAX_CALLBACK_DATA_BYTES = 64
_UPLOAD_LIMIT = 64 * 1024 * 1024
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Update types Telegram leaves out unless they are asked for by name in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Form fields are JSON-encoded by PTB unless they are strings; these are always strings,
# so "123" or "true" sent as message text must not be decoded into a number or a bool.
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "business_connection_id",
        "file_id",
        "url",
        "secret_token",
        "ip_address",
        "action",
        "language_code",
        "title",
        "description",
        "short_description",
        "name",
        "file_name",
        "performer",
        "emoji",
        "custom_title",
        "message_effect_id",
    }
)

# --- HTML parse mode ----------------------------------------------------------------------
_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED_CHARS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_CHAR_REF = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")
_TAG = re.compile(r"([a-zA-Z][a-zA-Z0-9-]*)(\s[^>]*)?")
_ATTRIBUTE = re.compile(r"""([a-zA-Z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")


class _ApiError(Exception):
    """A Bot API error answer; raised anywhere inside a method handler."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def response(self) -> web.Response:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.status)


def _bad_request(reason: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {reason}")


def _utf16_len(text: str) -> int:
    """Entity offsets and lengths are counted in UTF-16 code units, as in the Bot API."""
    return len(text.encode("utf-16-le")) // 2


def _decode_char_ref(ref: str) -> str | None:
    """The character an HTML reference stands for; None leaves it as literal text."""
    try:
        if ref.startswith(("#x", "#X")):
            return chr(int(ref[2:], 16))
        if ref.startswith("#"):
            return chr(int(ref[1:]))
    except (ValueError, OverflowError):
        return None
    return _NAMED_CHARS.get(ref)


def _unescape(value: str) -> str:
    return _CHAR_REF.sub(lambda m: _decode_char_ref(m.group(1)) or m.group(0), value)


def _parse_html(source: str) -> tuple[str, list[JSON]]:
    """Turn `parse_mode="HTML"` text into plain text plus entities, like Telegram does.

    Validating the markup matters because a transcript containing `<` or `&` that the bot
    forgot to escape is rejected by the real API ("can't parse entities"); a fake that
    accepted it would hide that bug.
    """

    def fail(reason: str) -> _ApiError:
        return _bad_request(f"can't parse entities: {reason}")

    pieces: list[str] = []
    offset = 0  # UTF-16 units emitted so far
    stack: list[tuple[str, int, JSON]] = []  # open tag, its start offset, entity extras
    entities: list[JSON] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&" and (ref := _CHAR_REF.match(source, i)) and (decoded := _decode_char_ref(ref.group(1))):
            piece, i = decoded, ref.end()
        elif char == "<":
            byte_offset = len(source[:i].encode())
            end = source.find(">", i)
            if end == -1:
                raise fail(f"Unclosed start tag at byte offset {byte_offset}")
            inner, i = source[i + 1 : end], end + 1
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise fail(f"Unexpected end tag at byte offset {byte_offset}")
                open_name, start, open_extras = stack.pop()
                if name and name != open_name:
                    raise fail(
                        f'Unmatched end tag at byte offset {byte_offset}, expected "</{open_name}>", found "</{name}>"'
                    )
                # <pre><code class="language-x"> is one pre entity with a language.
                language = open_extras.pop("_language", None)
                if language and stack and stack[-1][0] == "pre":
                    stack[-1][2]["language"] = language
                elif offset > start:
                    entities.append({"offset": start, "length": offset - start, **open_extras})
                continue
            tag = _TAG.fullmatch(inner)  # "< b>" is no tag for Telegram either
            name = tag.group(1).lower() if tag else inner
            attributes = {
                key.lower(): _unescape(next((v for v in values if v), ""))
                for key, *values in _ATTRIBUTE.findall((tag.group(2) or "") if tag else "")
            }
            spoiler_span = attributes.get("class") == "tg-spoiler"
            if not tag or name not in _HTML_ENTITY_TYPES or (name == "span" and not spoiler_span):
                raise fail(f'Unsupported start tag "{name}" at byte offset {byte_offset}')
            extras: JSON = {"type": _HTML_ENTITY_TYPES[name]}
            if name == "a":
                extras["url"] = attributes.get("href", "")
            elif name == "blockquote" and "expandable" in attributes:
                extras["type"] = "expandable_blockquote"
            elif name == "tg-emoji":
                extras["custom_emoji_id"] = attributes.get("emoji-id", "")
            elif name == "code" and attributes.get("class", "").startswith("language-"):
                extras["_language"] = attributes["class"].removeprefix("language-")
            stack.append((name, offset, extras))
            continue
        else:
            piece, i = char, i + 1
        pieces.append(piece)
        offset += _utf16_len(piece)
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
    return "".join(pieces), entities


# --- Public value types -------------------------------------------------------------------
@dataclass(frozen=True)
class FileRef:
    """A file registered with `add_file`; pass it to a `send_*` update builder."""

    file_id: str
    file_unique_id: str
    file_size: int


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request, as the bot uploaded it (e.g. sendDocument)."""

    filename: str | None
    content_type: str | None
    data: bytes

    def __repr__(self) -> str:
        return f"UploadedFile({self.filename!r}, {len(self.data)} bytes)"


@dataclass
class Call:
    """One HTTP request to a Bot API method, recorded once its parameters are read.

    `params` are decoded: form fields that PTB JSON-encodes (numbers, booleans,
    reply_markup, reply_parameters, ...) are objects again, uploaded files are
    `UploadedFile`. `status` is None while the fake is still answering (a delayed call).
    """

    method: str
    params: JSON
    at: float
    token: str
    status: int | None = None


@dataclass(frozen=True)
class SentDocument:
    """A document the bot sent, with the bytes it uploaded."""

    file_id: str
    file_name: str | None
    mime_type: str | None
    data: bytes


@dataclass(frozen=True)
class SentMessage:
    """The current state of a message the bot sent (edits applied).

    `text` is what the user sees: with parse_mode HTML, tags are already turned into
    `entities`. `history` holds the text (or caption) as sent and after each edit, so
    tests can check progress updates without racing the final edit.
    """

    chat_id: int
    message_id: int
    text: str | None
    caption: str | None
    entities: tuple[JSON, ...]
    reply_to_message_id: int | None
    reply_markup: JSON | None
    document: SentDocument | None
    deleted: bool
    history: tuple[str | None, ...]
    raw: JSON

    @property
    def buttons(self) -> list[tuple[str, str | None]]:
        """Inline buttons as (label, callback_data), row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(button["text"], button.get("callback_data")) for row in rows for button in row]


@dataclass
class Fault:
    """An injected misbehaviour; `fired` counts how many requests it affected.

    `target` is a method name (compared case-insensitively, like Telegram) or
    `file:<file_id>` for downloads. `remaining` is None for a fault that never runs out.
    """

    target: str
    status: int | None = None
    description: str | None = None
    retry_after: int | None = None
    delay: float | None = None
    responder: Responder | None = None
    remaining: int | None = 1
    fired: int = 0

    def error(self) -> _ApiError:
        status = self.status or 500
        retry_after = self.retry_after if self.retry_after is not None or status != 429 else 1
        if self.description is not None:
            description = self.description
        elif status == 429:
            description = f"Too Many Requests: retry after {retry_after}"
        elif status == 403:
            description = "Forbidden: bot was blocked by the user"
        else:
            description = http.HTTPStatus(status).phrase
        return _ApiError(status, description, {"retry_after": retry_after} if retry_after is not None else None)


# --- Internal state -----------------------------------------------------------------------
@dataclass
class _StoredFile:
    ref: FileRef
    data: bytes
    folder: str = "documents"
    extension: str = ""
    path: str | None = None  # assigned by the first getFile, as Telegram does


@dataclass
class _StoredMessage:
    chat_id: int
    message: JSON
    from_bot: bool
    sequence: int
    history: list[str | None] = field(default_factory=list)
    document: SentDocument | None = None
    deleted: bool = False


@dataclass
class _Chat:
    chat: JSON
    next_message_id: int = 1
    messages: dict[int, _StoredMessage] = field(default_factory=dict)
    admins: set[int] = field(default_factory=set)
    owner_id: int | None = None

    @property
    def id(self) -> int:
        return int(self.chat["id"])

    @property
    def is_private(self) -> bool:
        return bool(self.chat["type"] == "private")


def _decode_value(name: str, value: Any) -> Any:
    """Undo PTB's form encoding: every non-string parameter arrives as a JSON string."""
    if not isinstance(value, str) or name in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _resolve_attachments(value: Any, files: dict[str, UploadedFile], used: set[str]) -> Any:
    """Replace `attach://name` references (thumbnails, media groups) by the uploaded part."""
    if isinstance(value, str) and value.startswith("attach://"):
        name = value.removeprefix("attach://")
        used.add(name)
        return files.get(name, value)
    if isinstance(value, dict):
        return {key: _resolve_attachments(item, files, used) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_attachments(item, files, used) for item in value]
    return value


async def _read_params(request: web.Request) -> JSON:
    """Parameters from the query string and a JSON, urlencoded or multipart body."""
    raw: JSON = dict(request.query)
    files: dict[str, UploadedFile] = {}
    if request.content_type == "application/json":
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _bad_request("can't parse JSON object")
        raw.update(body)
    elif request.can_read_body:
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise _ApiError(413, "Request Entity Too Large") from None
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = UploadedFile(value.filename, value.content_type, value.file.read())
            else:
                raw[name] = value
    used: set[str] = set()
    params = {name: _resolve_attachments(_decode_value(name, value), files, used) for name, value in raw.items()}
    params.update({name: upload for name, upload in files.items() if name not in used})
    return params


def _without_reply(message: JSON) -> JSON:
    """A message as it appears in reply_to_message: Telegram does not nest replies deeper."""
    return {key: value for key, value in message.items() if key != "reply_to_message"}


def _inline_markup(markup: Any) -> JSON | None:
    """Validate reply_markup and return what a Message carries (only inline keyboards)."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return None
    for row in markup["inline_keyboard"]:
        for button in row:
            if not button.get("text"):
                raise _bad_request("BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= _MAX_CALLBACK_DATA_BYTES:
                raise _bad_request("BUTTON_DATA_INVALID")
    return markup


def _update_type(update: JSON) -> str:
    return next(key for key in update if key != "update_id")


P = ParamSpec("P")
R = TypeVar("R")


def _on_server_loop(method: Callable[Concatenate[FakeTelegram, P], R]) -> Callable[Concatenate[FakeTelegram, P], R]:
    """Run a public method on the server's thread when the server runs in the background.

    The state is owned by the event loop serving requests; touching it from the test's
    thread while a handler runs could interleave half-done updates (two messages with one
    id). Marshalling keeps a single owner without locks in every handler.
    """

    def wrapper(self: FakeTelegram, /, *args: P.args, **kwargs: P.kwargs) -> R:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread:
            return method(self, *args, **kwargs)
        future: concurrent.futures.Future[R] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(method(self, *args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    functools.update_wrapper(wrapper, method)
    return wrapper


class FakeTelegram:
    """An in-memory Telegram Bot API server on 127.0.0.1 with an ephemeral port.

    State mirrors Telegram's: per-chat message stores whose ids increase and are shared
    by user and bot messages, an update queue confirmed by getUpdates offsets, files
    that are served by getFile and the download route.

    Args:
        token: the only token accepted; others get 401 Unauthorized like Telegram.
        bot_username: the bot's username in getMe and in the `from` of its messages.
        local_mode_dir: mimic a self-hosted server started with `--local`: getFile writes
            the file under this directory and returns its absolute path, which PTB with
            `local_mode=True` reads from disk instead of downloading.
        max_download_bytes: getFile answers "file is too big" above this size, as
            api.telegram.org does above 20 MB; None for a self-hosted server (no limit).
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "transcriber_test_bot",
        local_mode_dir: Path | None = None,
        max_download_bytes: int | None = CLOUD_DOWNLOAD_LIMIT,
    ) -> None:
        self.token = token
        self.bot_user: JSON = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": "Transcriber",
            "username": bot_username,
        }
        self.local_mode_dir = local_mode_dir.resolve() if local_mode_dir is not None else None
        self.max_download_bytes = max_download_bytes
        self.port: int | None = None

        self._calls: list[Call] = []
        self._faults: list[Fault] = []
        self._updates: list[JSON] = []
        self._next_update_id = 1000
        self._allowed_updates: list[str] = []
        self._poll_generation = 0
        self._webhook: JSON = {}
        self._users: dict[int, JSON] = {}
        self._chats: dict[int, _Chat] = {}
        self._bot_messages: list[_StoredMessage] = []
        self._message_sequence = 0
        self._files: dict[str, _StoredFile] = {}
        self._file_ids_by_path: dict[str, str] = {}
        self._downloads: list[str] = []
        self._callback_queries: dict[str, bool] = {}  # id -> answered
        self._commands: dict[tuple[str, str], list[JSON]] = {}

        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._version = 0
        self._version_changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[str, Callable[[JSON], Any]] = {
            name.lower(): handler
            for name, handler in {
                "getMe": self._get_me,
                "logOut": self._true,
                "close": self._true,
                "getUpdates": self._get_updates,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "sendMessage": self._send_message,
                "editMessageText": self._edit_message_text,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "sendChatAction": self._send_chat_action,
                "sendDocument": self._send_document,
                "answerCallbackQuery": self._answer_callback_query,
                "getChatMember": self._get_chat_member,
                "getChatAdministrators": self._get_chat_administrators,
                "getFile": self._get_file,
            }.items()
        }

    # --- Lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1 (see `port`, `base_url`)."""
        if self._runner is not None:
            raise RuntimeError("FakeTelegram is already running")
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=_UPLOAD_LIMIT)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_route("*", "/file/bot{token}/{file_path:.+}", self._handle_download)
        # A short shutdown timeout: long polls and delayed answers wake up on _closing.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; pending long polls return an empty result first."""
        if self._runner is None:
            return
        self._closing.set()
        self._bump()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> FakeTelegram:
        """Serve from a background thread, for synchronous tests and tools."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-telegram", daemon=True)
        thread.start()
        self._thread_loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._thread_loop = self._thread = None

    # --- Connection details ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """`TELEGRAM_API_BASE_URL` / PTB `base_url` (the token is appended by the client)."""
        return f"http://127.0.0.1:{self._port()}/bot"

    @property
    def base_file_url(self) -> str:
        """`TELEGRAM_FILE_BASE_URL` / PTB `base_file_url`."""
        return f"http://127.0.0.1:{self._port()}/file/bot"

    def env(self) -> dict[str, str]:
        """Environment variables that point `python -m bot run` at this server."""
        return {
            "TELEGRAM_BOT_TOKEN": self.token,
            "TELEGRAM_API_BASE_URL": self.base_url,
            "TELEGRAM_FILE_BASE_URL": self.base_file_url,
            "TELEGRAM_LOCAL_MODE": "true" if self.local_mode_dir is not None else "false",
        }

    def bot_kwargs(self) -> JSON:
        """Keyword arguments for `telegram.Bot(...)` pointed at this server."""
        return {
            "token": self.token,
            "base_url": self.base_url,
            "base_file_url": self.base_file_url,
            "local_mode": self.local_mode_dir is not None,
        }

    def _port(self) -> int:
        if self.port is None:
            raise RuntimeError("FakeTelegram is not running; use `async with` or start()")
        return self.port

    # --- Test set-up ----------------------------------------------------------------------
    @_on_server_loop
    def add_file(self, data: bytes, *, file_unique_id: str | None = None, file_size: int | None = None) -> FileRef:
        """Register bytes that getFile and the download route will serve.

        `file_size` overrides the advertised size (in updates and getFile) so size limits
        can be tested without allocating the bytes; the download still serves `data`.
        """
        number = len(self._files) + 1
        ref = FileRef(
            file_id=f"AwACAgIAAxkBAAI{number:06d}fake",
            file_unique_id=file_unique_id or f"AgAD{number:06d}",
            file_size=len(data) if file_size is None else file_size,
        )
        self._files[ref.file_id] = _StoredFile(ref, bytes(data))
        return ref

    @_on_server_loop
    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
    ) -> JSON:
        """Set how a user looks in updates (users are otherwise created on first use)."""
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name or f"User {user_id}"}
        user["username"] = username or f"user{user_id}"
        if last_name:
            user["last_name"] = last_name
        if language_code:
            user["language_code"] = language_code
        self._users[user_id] = user
        return dict(user)

    @_on_server_loop
    def add_chat(self, chat_id: int, *, chat_type: ChatType | None = None, title: str | None = None) -> JSON:
        """Create a chat so the bot can send to it before anyone wrote there.

        Private chats have the user's id; groups have negative ids (the type defaults to
        "supergroup" for -100… ids, else "group").
        """
        return dict(self._ensure_chat(chat_id, chat_type, title=title).chat)

    @_on_server_loop
    def set_admins(self, chat_id: int, user_ids: Iterable[int], *, owner_id: int | None = None) -> None:
        """Choose who getChatMember/getChatAdministrators report as admins of a group.

        Include `bot_user["id"]` to let the bot delete other users' messages there.
        """
        chat = self._ensure_chat(chat_id, None)
        if chat.is_private:
            raise ValueError("private chats have no administrators")
        chat.admins = set(user_ids)
        chat.owner_id = owner_id

    # --- Update builders ------------------------------------------------------------------
    @_on_server_loop
    def send_voice(
        self,
        chat_id: int,
        user_id: int,
        file: FileRef,
        *,
        duration: int,
        chat_type: ChatType | None = None,
        message_id: int | None = None,
        forward_from: int | str | None = None,
        forward_origin: JSON | None = None,
        reply_to: int | None = None,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
    ) -> JSON:
        """Queue a user's voice note; returns the update.

        `chat_type` defaults to the chat's known type, else private for positive ids and a
        group for negative ones. `forward_from` is a user id (origin "user") or a name
        (origin "hidden_user"); `forward_origin` takes any raw MessageOrigin instead.
        `reply_to` is the id of a message in the same chat.
        """
        media = self._media(file, "voice", ".oga", duration=duration, mime_type=mime_type)
        return self._queue_message(
            chat_id, user_id, chat_type, {"voice": media}, message_id, reply_to, forward_from, forward_origin, caption
        )

    @_on_server_loop
    def send_audio(
        self,
        chat_id: int,
        user_id: int,
        file: FileRef,
        *,
        duration: int,
        chat_type: ChatType | None = None,
        message_id: int | None = None,
        forward_from: int | str | None = None,
        forward_origin: JSON | None = None,
        reply_to: int | None = None,
        mime_type: str = "audio/mpeg",
        file_name: str | None = None,
        title: str | None = None,
        performer: str | None = None,
        caption: str | None = None,
    ) -> JSON:
        """Queue a music/audio file message (see `send_voice` for the shared arguments)."""
        extension = Path(file_name).suffix if file_name else mimetypes.guess_extension(mime_type) or ""
        media = self._media(
            file,
            "music",
            extension,
            duration=duration,
            mime_type=mime_type,
            file_name=file_name,
            title=title,
            performer=performer,
        )
        return self._queue_message(
            chat_id, user_id, chat_type, {"audio": media}, message_id, reply_to, forward_from, forward_origin, caption
        )

    @_on_server_loop
    def send_video_note(
        self,
        chat_id: int,
        user_id: int,
        file: FileRef,
        *,
        duration: int,
        length: int = 384,
        chat_type: ChatType | None = None,
        message_id: int | None = None,
        forward_from: int | str | None = None,
        forward_origin: JSON | None = None,
        reply_to: int | None = None,
    ) -> JSON:
        """Queue a round video message (see `send_voice` for the shared arguments)."""
        media = self._media(file, "video_notes", ".mp4", duration=duration, length=length)
        return self._queue_message(
            chat_id, user_id, chat_type, {"video_note": media}, message_id, reply_to, forward_from, forward_origin, None
        )

    @_on_server_loop
    def send_video(
        self,
        chat_id: int,
        user_id: int,
        file: FileRef,
        *,
        duration: int,
        width: int = 640,
        height: int = 360,
        chat_type: ChatType | None = None,
        message_id: int | None = None,
        forward_from: int | str | None = None,
        forward_origin: JSON | None = None,
        reply_to: int | None = None,
        mime_type: str = "video/mp4",
        file_name: str | None = None,
        caption: str | None = None,
    ) -> JSON:
        """Queue a video message (see `send_voice` for the shared arguments)."""
        extension = Path(file_name).suffix if file_name else mimetypes.guess_extension(mime_type) or ""
        media = self._media(
            file,
            "videos",
            extension,
            duration=duration,
            width=width,
            height=height,
            mime_type=mime_type,
            file_name=file_name,
        )
        return self._queue_message(
            chat_id, user_id, chat_type, {"video": media}, message_id, reply_to, forward_from, forward_origin, caption
        )

    @_on_server_loop
    def send_document(
        self,
        chat_id: int,
        user_id: int,
        file: FileRef,
        *,
        mime_type: str,
        file_name: str,
        chat_type: ChatType | None = None,
        message_id: int | None = None,
        forward_from: int | str | None = None,
        forward_origin: JSON | None = None,
        reply_to: int | None = None,
        caption: str | None = None,
    ) -> JSON:
        """Queue a file sent as a document (see `send_voice` for the shared arguments)."""
        media = self._media(file, "documents", Path(file_name).suffix, mime_type=mime_type, file_name=file_name)
        content = {"document": media}
        return self._queue_message(
            chat_id, user_id, chat_type, content, message_id, reply_to, forward_from, forward_origin, caption
        )

    @_on_server_loop
    def send_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: ChatType | None = None,
        reply_to_message: int | None = None,
        message_id: int | None = None,
        entities: list[JSON] | None = None,
    ) -> JSON:
        """Queue a text message; returns the update.

        Text starting with "/" gets a `bot_command` entity over its first word (e.g.
        "/auto@bot on" -> "/auto@bot"), as Telegram clients send it, so PTB's
        CommandHandler matches. `entities` replaces the computed ones.
        """
        if entities is None:
            entities = []
            if text.startswith("/"):
                entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(text.split(maxsplit=1)[0])})
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._queue_message(chat_id, user_id, chat_type, content, message_id, reply_to_message, None, None, None)

    @_on_server_loop
    def press_button(self, chat_id: int, user_id: int, message_id: int, data: str, *, strict: bool = True) -> JSON:
        """Queue a callback_query: `user_id` pressed a button of a bot message.

        With `strict` the message must carry an inline button with this callback_data
        (a real client can press nothing else); pass strict=False to send stale or forged
        data.
        """
        chat = self._chat(chat_id)
        stored = chat.messages.get(message_id) if chat else None
        if stored is None or stored.deleted or not stored.from_bot:
            raise ValueError(f"no live bot message {message_id} in chat {chat_id}")
        if strict:
            offered = [data for _, data in self._view(stored).buttons]
            if data not in offered:
                raise ValueError(f"message {message_id} has no button with data {data!r}; it offers {offered}")
        query_id = f"{len(self._callback_queries) + 1}0000000000"
        self._callback_queries[query_id] = False
        query: JSON = {
            "id": query_id,
            "from": self._user(user_id),
            "message": dict(stored.message),
            "chat_instance": f"{chat_id * 7919:d}",
            "data": data,
        }
        return self._queue_update({"callback_query": query})

    @_on_server_loop
    def user_deletes_message(self, chat_id: int, message_id: int) -> None:
        """Delete a message as a user would; Telegram sends bots no update for this."""
        chat = self._chat(chat_id)
        stored = chat.messages.get(message_id) if chat else None
        if stored is None or stored.deleted:
            raise ValueError(f"no message {message_id} in chat {chat_id}")
        stored.deleted = True
        self._bump()

    @_on_server_loop
    def send_update(self, update: JSON) -> JSON:
        """Queue a raw update, e.g. an edited_message; the queue assigns its update_id."""
        return self._queue_update({key: value for key, value in update.items() if key != "update_id"})

    # --- Inspection -----------------------------------------------------------------------
    @_on_server_loop
    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded requests, oldest first; `method` filters case-insensitively."""
        return [call for call in self._calls if method is None or call.method.lower() == method.lower()]

    @_on_server_loop
    def sent_messages(self, chat_id: int | None = None, *, include_deleted: bool = False) -> list[SentMessage]:
        """The bot's messages in sending order, as they are now (edits applied)."""
        return [
            self._view(stored)
            for stored in self._bot_messages
            if (chat_id is None or stored.chat_id == chat_id) and (include_deleted or not stored.deleted)
        ]

    @_on_server_loop
    def pending_updates(self) -> list[JSON]:
        """Updates the bot has not confirmed yet (with a getUpdates offset)."""
        return [dict(update) for update in self._updates]

    @_on_server_loop
    def downloads(self) -> list[str]:
        """file_ids fetched through the download route, in order (not local-mode reads)."""
        return list(self._downloads)

    @_on_server_loop
    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """The command list set with setMyCommands for a scope (default scope if None)."""
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def tokens_seen(self) -> set[str]:
        """Every token a request used, the rejected ones included."""
        return {call.token for call in self.calls()}

    async def wait_for(self, predicate: Callable[[FakeTelegram], R], timeout: float = 5.0) -> R:
        """Wait until `predicate(self)` is truthy and return its value.

        The predicate is re-checked after every request and state change, so there is no
        polling interval to tune. On timeout, raises AssertionError listing the recorded
        calls and the bot's messages, which is usually enough to see what went wrong.
        """
        if self._thread is not None:
            return await asyncio.to_thread(self.wait_for_sync, predicate, timeout)
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            result = predicate(self)
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(predicate, timeout))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def wait_for_sync(self, predicate: Callable[[FakeTelegram], R], timeout: float = 5.0) -> R:
        """`wait_for` for synchronous code, with the server on its background thread."""
        deadline = time.monotonic() + timeout
        while True:
            with self._version_changed:
                seen = self._version
            result = predicate(self)
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(predicate, timeout))
            with self._version_changed:
                if self._version == seen:
                    self._version_changed.wait(remaining)

    # --- Fault injection ------------------------------------------------------------------
    @_on_server_loop
    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Answer the next `times` calls of `method` with an error (None: every call).

        The description defaults to Telegram's wording (429: "Too Many Requests: retry
        after N" with `parameters.retry_after`, default 1 s). The call has no effect.
        """
        return self._add_fault(
            Fault(method.lower(), status=status, description=description, retry_after=retry_after, remaining=times)
        )

    @_on_server_loop
    def delay(self, method: str, seconds: float, *, times: int | None = None) -> Fault:
        """Hold answers to `method` for `seconds` (None `times`: until `clear_faults`).

        The call still takes effect after the delay even if the client gave up, as on the
        real API: a client timeout does not mean the message was not sent.
        """
        return self._add_fault(Fault(method.lower(), delay=seconds, remaining=times))

    @_on_server_loop
    def fail_file_download(
        self, file_id: str, *, status: int | None = None, delay: float | None = None, times: int | None = 1
    ) -> Fault:
        """Make downloads of a file fail with `status`, be slow by `delay`, or both.

        Only the HTTP download route is affected; local-mode reads happen on disk.
        """
        if status is None and delay is None:
            raise ValueError("give a status, a delay or both")
        return self._add_fault(Fault(f"file:{file_id}", status=status, delay=delay, remaining=times))

    @_on_server_loop
    def respond_with(self, method: str, responder: Responder, *, times: int | None = 1) -> Fault:
        """Answer `method` with whatever aiohttp response `responder(call)` returns.

        For shapes the other helpers do not cover, e.g. an HTML 502 page from a proxy.
        """
        return self._add_fault(Fault(method.lower(), responder=responder, remaining=times))

    @_on_server_loop
    def clear_faults(self) -> None:
        """Remove every pending fault (their `fired` counts stay readable)."""
        self._faults.clear()

    def _add_fault(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def _take_fault(self, target: str) -> Fault | None:
        for fault in self._faults:
            if fault.target == target and fault.remaining != 0:
                fault.fired += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    # --- HTTP -----------------------------------------------------------------------------
    async def _handle_method(self, request: web.Request) -> web.StreamResponse:
        call = Call(request.match_info["method"], {}, time.monotonic(), request.match_info["token"])
        try:
            try:
                call.params = await _read_params(request)
            finally:
                # Listed only once its parameters are read: a waiting test sees the whole call.
                self._calls.append(call)
                self._bump()
            response = await self._answer(call)
        except _ApiError as error:
            response = error.response()
        call.status = response.status
        self._bump()
        return response

    async def _answer(self, call: Call) -> web.StreamResponse:
        if call.token != self.token:
            raise _ApiError(401, "Unauthorized")
        fault = self._take_fault(call.method.lower())
        if fault is not None:
            if fault.delay and not await self._sleep(fault.delay):
                raise _ApiError(500, "Internal Server Error: the fake server is stopping")
            if fault.responder is not None:
                response = fault.responder(call)
                return await response if inspect.isawaitable(response) else response
            if fault.status is not None:
                raise fault.error()
        handler = self._handlers.get(call.method.lower())
        if handler is None:
            raise _ApiError(404, "Not Found")
        result = handler(call.params)
        if inspect.isawaitable(result):
            result = await result
        return web.json_response({"ok": True, "result": result})

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            file_id = self._file_ids_by_path.get(request.match_info["file_path"])
            if file_id is None:
                raise _ApiError(404, "Not Found")
            fault = self._take_fault(f"file:{file_id}")
            if fault is not None:
                if fault.delay and not await self._sleep(fault.delay):
                    raise _ApiError(500, "Internal Server Error: the fake server is stopping")
                if fault.status is not None:
                    raise fault.error()
        except _ApiError as error:
            return error.response()
        self._downloads.append(file_id)
        self._bump()
        return web.Response(body=self._files[file_id].data, content_type="application/octet-stream")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False when it is stopping."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _bump(self) -> None:
        """Wake everything waiting for a change (wait_for, long polls)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        with self._version_changed:
            self._version += 1
            self._version_changed.notify_all()

    # --- Bot API methods ------------------------------------------------------------------
    def _true(self, params: JSON) -> bool:
        return True

    def _get_me(self, params: JSON) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSON) -> list[JSON]:
        """Long polling with Telegram's semantics.

        An offset confirms every update below it (a negative one keeps only the last
        -offset updates); a newer getUpdates ends an older pending one with 409 Conflict,
        which is what a second bot instance on the same token gets.
        """
        if self._webhook.get("url"):
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset", 0))
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        timeout = max(float(params.get("timeout", 0)), 0.0)
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        if offset > 0:
            self._updates = [update for update in self._updates if update["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        self._poll_generation += 1
        generation = self._poll_generation
        deadline = time.monotonic() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                )
            batch = self._deliverable()[:limit]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or self._closing.is_set():
                return batch
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _deliverable(self) -> list[JSON]:
        """Drop queued updates of types the bot did not ask for, as Telegram never sends them."""
        allowed = set(self._allowed_updates)

        def wanted(update: JSON) -> bool:
            kind = _update_type(update)
            return kind in allowed if allowed else kind not in _OPT_IN_UPDATES

        self._updates = [update for update in self._updates if wanted(update)]
        return self._updates

    def _set_webhook(self, params: JSON) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = {key: value for key, value in params.items() if not isinstance(value, UploadedFile)}
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        return True

    def _delete_webhook(self, params: JSON) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = {}
        return True

    def _get_webhook_info(self, params: JSON) -> JSON:
        info: JSON = {
            "url": self._webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._webhook.get("url") and self._allowed_updates:
            info["allowed_updates"] = self._allowed_updates
        return info

    @staticmethod
    def _commands_key(scope: JSON | None, language_code: str | None) -> tuple[str, str]:
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code or ""

    def _set_my_commands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad_request("command description is empty")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _get_my_commands(self, params: JSON) -> list[JSON]:
        return self._commands.get(self._commands_key(params.get("scope"), params.get("language_code")), [])

    def _delete_my_commands(self, params: JSON) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code")), None)
        return True

    def _send_message(self, params: JSON) -> JSON:
        chat = self._target_chat(params)
        text, entities = self._formatted(params, "text", "entities", _MAX_TEXT)
        if text is None:
            raise _bad_request("message text is empty")
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._store_bot_message(chat, params, content, history=text)

    def _edit_message_text(self, params: JSON) -> JSON:
        stored = self._editable(params, "edit")
        if "text" not in stored.message:
            raise _bad_request("there is no text in the message to edit")
        text, entities = self._formatted(params, "text", "entities", _MAX_TEXT)
        if text is None:
            raise _bad_request("message text is empty")
        # Editing without reply_markup removes the inline keyboard, as on Telegram.
        markup = _inline_markup(params.get("reply_markup"))
        message = stored.message
        if (text, entities, markup) == (message["text"], message.get("entities", []), message.get("reply_markup")):
            raise _ApiError(400, _NOT_MODIFIED)
        message["text"] = text
        self._set_optional(message, "entities", entities)
        self._set_optional(message, "reply_markup", markup)
        return self._after_edit(stored, text)

    def _edit_message_reply_markup(self, params: JSON) -> JSON:
        stored = self._editable(params, "edit")
        markup = _inline_markup(params.get("reply_markup"))
        if markup == stored.message.get("reply_markup"):
            raise _ApiError(400, _NOT_MODIFIED)
        self._set_optional(stored.message, "reply_markup", markup)
        return self._after_edit(stored, stored.message.get("text", stored.message.get("caption")))

    def _delete_message(self, params: JSON) -> bool:
        stored = self._editable(params, "delete")
        chat = self._chats[stored.chat_id]
        bot_is_admin = self.bot_user["id"] in chat.admins or self.bot_user["id"] == chat.owner_id
        if not stored.from_bot and not chat.is_private and not bot_is_admin:
            raise _bad_request("message can't be deleted")
        stored.deleted = True
        return True

    def _send_chat_action(self, params: JSON) -> bool:
        self._target_chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    def _send_document(self, params: JSON) -> JSON:
        chat = self._target_chat(params)
        document = params.get("document")
        if isinstance(document, UploadedFile):
            if not document.data:
                raise _bad_request("file must be non-empty")
            ref = self.add_file(document.data)
            stored_file = self._files[ref.file_id]
            stored_file.extension = Path(document.filename or "").suffix
            file_name, mime_type, data = document.filename, document.content_type, document.data
        elif isinstance(document, str) and document in self._files:
            stored_file = self._files[document]
            ref, file_name, mime_type, data = stored_file.ref, None, None, stored_file.data
        elif document is None:
            raise _bad_request("there is no document in the request")
        else:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        media: JSON = {"file_id": ref.file_id, "file_unique_id": ref.file_unique_id, "file_size": ref.file_size}
        if file_name:
            media["file_name"] = file_name
        if mime_type:
            media["mime_type"] = mime_type
        caption, caption_entities = self._formatted(params, "caption", "caption_entities", _MAX_CAPTION)
        content: JSON = {"document": media}
        if caption is not None:
            content["caption"] = caption
        if caption_entities:
            content["caption_entities"] = caption_entities
        sent = SentDocument(ref.file_id, file_name, mime_type, data)
        return self._store_bot_message(chat, params, content, history=caption, document=sent)

    def _answer_callback_query(self, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        if self._callback_queries.get(query_id, True):
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        if len(str(params.get("text", ""))) > 200:
            raise _bad_request("MESSAGE_TOO_LONG")
        self._callback_queries[query_id] = True
        return True

    def _get_chat_member(self, params: JSON) -> JSON:
        chat = self._target_chat(params)
        user_id = int(params.get("user_id", 0))
        if chat.is_private and user_id not in (chat.id, self.bot_user["id"]):
            raise _bad_request("user not found")
        return self._member(chat, user_id)

    def _get_chat_administrators(self, params: JSON) -> list[JSON]:
        chat = self._target_chat(params)
        if chat.is_private:
            raise _bad_request("there are no administrators in the private chat")
        ids = ([chat.owner_id] if chat.owner_id is not None else []) + sorted(chat.admins - {chat.owner_id})
        return [self._member(chat, user_id) for user_id in ids]

    def _member(self, chat: _Chat, user_id: int) -> JSON:
        user = dict(self.bot_user) if user_id == self.bot_user["id"] else self._user(user_id)
        if user_id == chat.owner_id:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id not in chat.admins:
            return {"status": "member", "user": user}
        rights = (
            "can_manage_chat",
            "can_delete_messages",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_change_info",
            "can_invite_users",
            "can_pin_messages",
        )
        return {
            "status": "administrator",
            "user": user,
            "can_be_edited": False,
            "is_anonymous": False,
            "can_promote_members": False,
            "can_post_stories": False,
            "can_edit_stories": False,
            "can_delete_stories": False,
            **dict.fromkeys(rights, True),
        }

    def _get_file(self, params: JSON) -> JSON:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise _bad_request("invalid file_id")
        if self.max_download_bytes is not None and stored.ref.file_size > self.max_download_bytes:
            raise _bad_request("file is too big")
        if stored.path is None:
            number = list(self._files).index(stored.ref.file_id)
            relative = f"{stored.folder}/file_{number}{stored.extension}"
            if self.local_mode_dir is None:
                stored.path = relative
            else:
                on_disk = self.local_mode_dir / self.token / relative
                on_disk.parent.mkdir(parents=True, exist_ok=True)
                on_disk.write_bytes(stored.data)
                stored.path = str(on_disk)
            self._file_ids_by_path[stored.path] = stored.ref.file_id
        return {
            "file_id": stored.ref.file_id,
            "file_unique_id": stored.ref.file_unique_id,
            "file_size": stored.ref.file_size,
            "file_path": stored.path,
        }

    # --- Helpers for the methods and builders ---------------------------------------------
    def _formatted(self, params: JSON, name: str, entities_name: str, limit: int) -> tuple[str | None, list[JSON]]:
        """Text (or caption) and entities as Telegram stores them, with its length errors."""
        raw = params.get(name)
        if raw is None:
            return None, []
        text, entities = str(raw), list(params.get(entities_name) or [])
        parse_mode = str(params.get("parse_mode") or "").lower()
        if parse_mode == "html":
            text, entities = _parse_html(text)
        elif parse_mode not in ("", "markdown", "markdownv2"):
            raise _bad_request("unsupported parse_mode")
        if name == "text" and not text.strip():
            raise _bad_request("message text is empty")
        if len(text) > limit:
            raise _bad_request("message is too long" if name == "text" else "message caption is too long")
        return text, entities

    def _chat(self, chat_id: Any) -> _Chat | None:
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            return next((c for c in self._chats.values() if c.chat.get("username") == chat_id[1:]), None)
        try:
            return self._chats.get(int(chat_id))
        except (TypeError, ValueError):
            return None

    def _target_chat(self, params: JSON) -> _Chat:
        if params.get("chat_id") in (None, ""):
            raise _bad_request("chat_id is empty")
        chat = self._chat(params["chat_id"])
        if chat is None:
            raise _bad_request("chat not found")
        return chat

    def _editable(self, params: JSON, verb: Literal["edit", "delete"]) -> _StoredMessage:
        if "inline_message_id" in params:
            raise _bad_request("MESSAGE_ID_INVALID")
        chat = self._target_chat(params)
        stored = chat.messages.get(int(params.get("message_id") or 0))
        if stored is None or stored.deleted:
            raise _bad_request(f"message to {verb} not found")
        if verb == "edit" and not stored.from_bot:
            raise _bad_request("message can't be edited")
        return stored

    def _reply_target(self, chat: _Chat, params: JSON) -> JSON | None:
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if not reply:
            return None
        target = chat if reply.get("chat_id") is None else self._chat(reply["chat_id"])
        stored = target.messages.get(int(reply.get("message_id", 0))) if target else None
        if stored is None or stored.deleted:
            if reply.get("allow_sending_without_reply"):
                return None
            raise _bad_request("message to be replied not found")
        return _without_reply(stored.message)

    def _store_bot_message(
        self, chat: _Chat, params: JSON, content: JSON, *, history: str | None, document: SentDocument | None = None
    ) -> JSON:
        reply_to = self._reply_target(chat, params)
        markup = _inline_markup(params.get("reply_markup"))
        message = self._new_message(chat, self.bot_user, content, None)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if markup is not None:
            message["reply_markup"] = markup
        stored = self._remember(chat, message, from_bot=True)
        stored.history.append(history)
        stored.document = document
        self._bot_messages.append(stored)
        return dict(message)

    def _after_edit(self, stored: _StoredMessage, history: str | None) -> JSON:
        stored.message["edit_date"] = int(time.time())
        stored.history.append(history)
        return dict(stored.message)

    @staticmethod
    def _set_optional(message: JSON, key: str, value: Any) -> None:
        if value:
            message[key] = value
        else:
            message.pop(key, None)

    def _user(self, user_id: int) -> JSON:
        if user_id not in self._users:
            self.add_user(user_id)
        return dict(self._users[user_id])

    def _ensure_chat(
        self, chat_id: int, chat_type: ChatType | None, *, user_id: int | None = None, title: str | None = None
    ) -> _Chat:
        """The chat with this id, created on first use; checks the id fits the type."""
        existing = self._chats.get(chat_id)
        if existing is not None:
            if chat_type is not None and chat_type != existing.chat["type"]:
                raise ValueError(f"chat {chat_id} is a {existing.chat['type']} chat, not {chat_type}")
            return existing
        kind = chat_type or ("private" if chat_id > 0 else "supergroup" if str(chat_id).startswith("-100") else "group")
        if kind == "private":
            if chat_id <= 0 or (user_id is not None and user_id != chat_id):
                raise ValueError(f"a private chat's id is its user's id (got chat {chat_id}, user {user_id})")
            user = self._user(chat_id)
            chat: JSON = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            chat.update({key: user[key] for key in ("last_name", "username") if key in user})
        else:
            if chat_id >= 0:
                raise ValueError(f"group chat ids are negative (got {chat_id})")
            chat = {"id": chat_id, "type": kind, "title": title or f"Test group {-chat_id}"}
        self._chats[chat_id] = _Chat(chat)
        return self._chats[chat_id]

    def _media(self, file: FileRef, folder: str, extension: str, **fields: Any) -> JSON:
        stored = self._files.get(file.file_id)
        if stored is None:
            raise ValueError(f"{file} was not registered with add_file on this server")
        if stored.path is None:
            stored.folder, stored.extension = folder, extension
        media: JSON = {"file_id": file.file_id, "file_unique_id": file.file_unique_id}
        media.update({key: value for key, value in fields.items() if value is not None})
        media["file_size"] = file.file_size
        return media

    def _queue_message(
        self,
        chat_id: int,
        user_id: int,
        chat_type: ChatType | None,
        content: JSON,
        message_id: int | None,
        reply_to: int | None,
        forward_from: int | str | None,
        forward_origin: JSON | None,
        caption: str | None,
    ) -> JSON:
        chat = self._ensure_chat(chat_id, chat_type, user_id=user_id)
        if forward_from is not None and forward_origin is not None:
            raise ValueError("give forward_from or forward_origin, not both")
        if isinstance(forward_from, int):
            forward_origin = {"type": "user", "sender_user": self._user(forward_from)}
        elif isinstance(forward_from, str):
            forward_origin = {"type": "hidden_user", "sender_user_name": forward_from}
        if forward_origin is not None:
            forward_origin = {"date": int(time.time()) - 3600, **forward_origin}
        extra: JSON = dict(content)
        if caption is not None:
            extra["caption"] = caption
        if forward_origin is not None:
            extra["forward_origin"] = forward_origin
        if reply_to is not None:
            target = chat.messages.get(reply_to)
            if target is None or target.deleted:
                raise ValueError(f"no message {reply_to} in chat {chat_id} to reply to")
            extra["reply_to_message"] = _without_reply(target.message)
        message = self._new_message(chat, self._user(user_id), extra, message_id)
        self._remember(chat, message, from_bot=False)
        return self._queue_update({"message": dict(message)})

    def _new_message(self, chat: _Chat, sender: JSON, content: JSON, message_id: int | None) -> JSON:
        if message_id is None:
            message_id = chat.next_message_id
        elif message_id in chat.messages:
            raise ValueError(f"message {message_id} already exists in chat {chat.id}")
        chat.next_message_id = max(chat.next_message_id, message_id + 1)
        return {"message_id": message_id, "from": sender, "chat": dict(chat.chat), "date": int(time.time()), **content}

    def _remember(self, chat: _Chat, message: JSON, *, from_bot: bool) -> _StoredMessage:
        self._message_sequence += 1
        stored = _StoredMessage(chat.id, message, from_bot, self._message_sequence)
        chat.messages[message["message_id"]] = stored
        self._bump()
        return stored

    def _queue_update(self, update: JSON) -> JSON:
        queued = {"update_id": self._next_update_id, **update}
        self._next_update_id += 1
        self._updates.append(queued)
        self._bump()
        return dict(queued)

    def _view(self, stored: _StoredMessage) -> SentMessage:
        message = json.loads(json.dumps(stored.message))  # a snapshot later edits cannot change
        return SentMessage(
            chat_id=stored.chat_id,
            message_id=message["message_id"],
            text=message.get("text"),
            caption=message.get("caption"),
            entities=tuple(message.get("entities", message.get("caption_entities", []))),
            reply_to_message_id=message.get("reply_to_message", {}).get("message_id"),
            reply_markup=message.get("reply_markup"),
            document=stored.document,
            deleted=stored.deleted,
            history=tuple(stored.history),
            raw=message,
        )

    def _timeout_report(self, predicate: Callable[..., object], timeout: float) -> str:
        try:
            condition = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            condition = repr(predicate)
        calls = self.calls()
        start = calls[0].at if calls else 0.0
        lines = [f"Timed out after {timeout:g}s waiting for: {condition}", f"Recorded calls ({len(calls)}):"]
        for call in calls[-40:]:
            params = ", ".join(f"{key}={value!r}" for key, value in call.params.items())
            lines.append(f"  +{call.at - start:7.3f}s {call.method} -> {call.status}  {params[:160]}")
        lines.append("Bot messages now:")
        for sent in self.sent_messages(include_deleted=True):
            state = " (deleted)" if sent.deleted else ""
            lines.append(f"  chat {sent.chat_id} #{sent.message_id}{state}: {sent.text or sent.caption!r}")
        lines.append(f"Unconfirmed updates: {len(self.pending_updates())}")
        return "\n".join(lines)
