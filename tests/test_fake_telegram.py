"""The fake Bot API is only useful if PTB reads it like the real one.

Every test drives the fake with PTB's own `telegram.Bot`, so a response shape PTB would
reject, or an error it would map to a different exception, fails here rather than as a
puzzling end-to-end failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    ChatMemberAdministrator,
    ChatMemberMember,
    ChatMemberOwner,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageOriginHiddenUser,
    MessageOriginUser,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from tests.fake_telegram import FakeTelegram

USER = 42
GROUP = -1001234567890


@pytest_asyncio.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(**telegram.bot_kwargs()) as client:
        yield client


@pytest.fixture(autouse=True)
def durations_as_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns when durations are read as int; opt in to the future timedelta type."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(item, callback_data=item) for item in data]])


async def test_get_me_and_unknown_token(telegram: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456, True, "transcriber_test_bot")
    with pytest.raises(InvalidToken, match="rejected"):
        async with Bot("999:WRONG", base_url=telegram.base_url):
            pass
    assert telegram.tokens_seen == {"123456:TEST", "999:WRONG"}
    assert telegram.calls("getMe")[-1].status == 401


async def test_get_updates_returns_queued_update_at_once(telegram: FakeTelegram, bot: Bot) -> None:
    queued = telegram.send_text(USER, USER, "/history 5")
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    assert time.monotonic() - started < 1
    assert [u.update_id for u in updates] == [queued["update_id"]]
    message = updates[0].message
    assert message is not None and message.text == "/history 5"
    assert message.parse_entities() and message.entities[0].type == "bot_command"
    assert message.chat.type == "private" and message.from_user is not None and message.from_user.id == USER


async def test_get_updates_long_polls_and_confirms_with_offset(telegram: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 < time.monotonic() - started < 2

    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await telegram.wait_for(lambda tg: len(tg.calls("getUpdates")) == 2)
    await asyncio.sleep(0.05)
    first = telegram.send_text(USER, USER, "hello")
    updates = await asyncio.wait_for(poll, 2)  # woken by the new update, not the timeout
    assert [u.update_id for u in updates] == [first["update_id"]]

    second = telegram.send_text(USER, USER, "again")
    again = await bot.get_updates(offset=first["update_id"] + 1, timeout=0)
    assert [u.update_id for u in again] == [second["update_id"]]
    assert [u["update_id"] for u in telegram.pending_updates()] == [second["update_id"]]
    await bot.get_updates(offset=second["update_id"] + 1, timeout=0)
    assert telegram.pending_updates() == []


async def test_get_updates_limit_allowed_updates_and_conflict(telegram: FakeTelegram, bot: Bot) -> None:
    for text in ("a", "b", "c"):
        telegram.send_text(USER, USER, text)
    assert len(await bot.get_updates(limit=2)) == 2
    telegram.send_update({"chat_member": {"whatever": True}})  # opt-in type: never delivered
    assert [u.message.text for u in await bot.get_updates() if u.message] == ["a", "b", "c"]
    assert len(telegram.pending_updates()) == 3
    assert await bot.get_updates(allowed_updates=["callback_query"]) == ()

    first = asyncio.create_task(bot.get_updates(timeout=5))
    await telegram.wait_for(lambda tg: len(tg.calls("getUpdates")) == 4)
    await asyncio.sleep(0.05)
    async with Bot(**telegram.bot_kwargs()) as second_instance:  # one poll at a time per Bot
        await second_instance.get_updates(timeout=0)
    with pytest.raises(Conflict, match="terminated by other getUpdates"):
        await first


async def test_send_edit_and_not_modified(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.send_text(USER, USER, "hi")  # message 1
    sent = await bot.send_message(
        USER,
        "<b>Transcribing</b> 1 &lt; 2",
        parse_mode="HTML",
        reply_parameters=ReplyParameters(1),
        reply_markup=keyboard("cancel"),
    )
    assert sent.reply_to_message is not None and sent.reply_to_message.message_id == 1
    assert (sent.message_id, sent.text) == (2, "Transcribing 1 < 2")
    assert sent.entities[0].type == "bold" and sent.entities[0].length == len("Transcribing")
    assert sent.reply_markup == keyboard("cancel")

    edited = await bot.edit_message_text("Done", chat_id=USER, message_id=2, reply_markup=keyboard("cancel"))
    assert isinstance(edited, type(sent)) and edited.text == "Done" and edited.edit_date is not None
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Done", chat_id=USER, message_id=2, reply_markup=keyboard("cancel"))
    await bot.edit_message_text("Done", chat_id=USER, message_id=2)  # dropping the keyboard is a change

    [view] = telegram.sent_messages(USER)
    assert (view.text, view.reply_markup, view.reply_to_message_id) == ("Done", None, 1)
    assert view.history == ("Transcribing 1 < 2", "Done", "Done")
    body = telegram.calls("editMessageText")[1]
    assert body.status == 400 and body.params["message_id"] == 2


async def test_html_parse_mode_like_telegram(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.add_chat(USER)
    html = '😀 <pre><code class="language-python">x = 1</code></pre> <a href="https://e.x/?a=1&amp;b=2">link</a>'
    sent = await bot.send_message(USER, html, parse_mode="HTML")
    assert sent.text == "😀 x = 1 link"
    pre, link = sent.entities
    assert (pre.type, pre.offset, pre.length, pre.language) == ("pre", 3, 5, "python")  # 😀 is 2 UTF-16 units
    assert (link.type, link.offset, link.url) == ("text_link", 9, "https://e.x/?a=1&b=2")
    for bad in ("1 < 2", "<br>", "<b>x</i>", "x</b>", "< b>x</b>"):
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await bot.send_message(USER, bad, parse_mode="HTML")
    assert (await bot.send_message(USER, "1 < 2")).text == "1 < 2"  # no parse mode: taken literally


async def test_missing_messages_and_bad_markup(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.send_text(USER, USER, "hi")
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=99)
    with pytest.raises(BadRequest, match="Message can't be edited"):
        await bot.edit_message_text("x", chat_id=USER, message_id=1)
    sent = await bot.send_message(USER, "placeholder")
    assert await bot.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=keyboard("a"))

    telegram.user_deletes_message(USER, 1)
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(USER, "reply", reply_parameters=ReplyParameters(1))
    alone = await bot.send_message(USER, "reply", reply_parameters=ReplyParameters(1, allow_sending_without_reply=True))
    assert alone.reply_to_message is None

    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(777, "nobody here")
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(USER, "a <b>bold", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "x" * 4097)
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(USER, "x", reply_markup=keyboard("y" * 65))
    assert [m.text for m in telegram.sent_messages(USER)] == ["reply"]
    assert len(telegram.sent_messages(USER, include_deleted=True)) == 2


async def test_rate_limit_and_server_errors(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.add_chat(USER)
    flood = telegram.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(RetryAfter) as raised:
        await bot.send_message(USER, "x")
    assert raised.value.retry_after == timedelta(seconds=7) and flood.fired == 1
    outage = telegram.fail_next("sendMessage", status=500, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError) as error:
            await bot.send_message(USER, "x")
        assert not isinstance(error.value, (BadRequest, TimedOut))
    assert outage.fired == 2 and outage.remaining == 0
    assert telegram.sent_messages() == []  # failed calls have no effect
    await bot.send_message(USER, "x")

    telegram.respond_with("sendMessage", lambda call: web.Response(status=502, text="<html>Bad Gateway</html>"))
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(USER, "x")
    assert [call.status for call in telegram.calls("sendMessage")] == [429, 500, 500, 200, 502]


async def test_delay_times_out_the_client_but_still_applies(telegram: FakeTelegram) -> None:
    telegram.add_chat(USER)
    fault = telegram.delay("sendMessage", 0.5, times=1)
    async with Bot(**telegram.bot_kwargs(), request=HTTPXRequest(read_timeout=0.1)) as impatient:
        with pytest.raises(TimedOut):
            await impatient.send_message(USER, "slow")
    assert fault.fired == 1
    await telegram.wait_for(lambda tg: tg.sent_messages(USER), timeout=2)


async def test_get_file_and_download(telegram: FakeTelegram, bot: Bot, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    ref = telegram.add_file(data)
    telegram.send_voice(USER, USER, ref, duration=3)
    file = await bot.get_file(ref.file_id)
    assert (file.file_id, file.file_unique_id, file.file_size) == (ref.file_id, ref.file_unique_id, len(data))
    assert file.file_path is not None and file.file_path.startswith(telegram.base_file_url)
    assert file.file_path.endswith(".oga")
    target = await file.download_to_drive(tmp_path / "voice.oga")
    assert target.read_bytes() == data
    assert telegram.downloads() == [ref.file_id]

    broken = telegram.fail_file_download(ref.file_id, status=500)
    with pytest.raises(NetworkError):
        await file.download_as_bytearray()
    assert broken.fired == 1
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("nope")
    huge = telegram.add_file(b"x", file_size=25 * 1024 * 1024)
    with pytest.raises(BadRequest, match="File is too big"):
        await bot.get_file(huge.file_id)


async def test_local_mode_returns_a_path_on_disk(tmp_path: Path) -> None:
    async with FakeTelegram(local_mode_dir=tmp_path, max_download_bytes=None) as local:
        async with Bot(**local.bot_kwargs()) as client:
            ref = local.add_file(b"big" * 1000, file_size=30 * 1024 * 1024)
            file = await client.get_file(ref.file_id)
            assert file.file_path is not None and Path(file.file_path).is_absolute()
            assert Path(file.file_path).is_relative_to(tmp_path)
            assert bytes(await file.download_as_bytearray()) == b"big" * 1000
        assert local.env()["TELEGRAM_LOCAL_MODE"] == "true"


async def test_send_document_is_captured(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.send_voice(USER, USER, telegram.add_file(b"ogg"), duration=1)
    payload = b"a long transcript\n" * 1000
    sent = await bot.send_document(
        USER,
        payload,
        filename="transcript.txt",
        caption="<i>Transcript</i>",
        parse_mode="HTML",
        reply_parameters=ReplyParameters(1),
    )
    assert sent.document is not None and sent.document.file_name == "transcript.txt"
    assert sent.caption == "Transcript" and sent.reply_to_message is not None
    [view] = telegram.sent_messages(USER)
    assert view.document is not None and view.document.data == payload
    assert view.document.file_name == "transcript.txt" and view.reply_to_message_id == 1
    upload = telegram.calls("sendDocument")[0].params["document"]
    assert upload.filename == "transcript.txt" and upload.data == payload
    again = await bot.get_file(sent.document.file_id)
    assert bytes(await again.download_as_bytearray()) == payload


async def test_commands_chat_actions_and_members(telegram: FakeTelegram, bot: Bot) -> None:
    commands = [BotCommand("history", "Your recent transcripts"), BotCommand("auto", "Auto-transcribe on/off")]
    assert await bot.set_my_commands(commands)
    assert await bot.get_my_commands() == tuple(commands)
    assert telegram.commands() == [c.to_dict() for c in commands]
    assert telegram.calls("setMyCommands")[0].params["commands"][0]["command"] == "history"
    with pytest.raises(BadRequest):
        await bot.set_my_commands([BotCommand("Bad-Name", "x")])

    telegram.send_text(GROUP, USER, "/auto@transcriber_test_bot off")
    telegram.set_admins(GROUP, [7], owner_id=8)
    assert await bot.send_chat_action(GROUP, "typing")
    assert isinstance(await bot.get_chat_member(GROUP, 7), ChatMemberAdministrator)
    assert isinstance(await bot.get_chat_member(GROUP, 8), ChatMemberOwner)
    assert isinstance(await bot.get_chat_member(GROUP, USER), ChatMemberMember)
    assert [m.user.id for m in await bot.get_chat_administrators(GROUP)] == [8, 7]
    with pytest.raises(BadRequest, match="Message can't be deleted"):
        await bot.delete_message(GROUP, 1)  # the bot is no admin there


async def test_callback_query_update(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.add_user(USER, first_name="Ada", username="ada")
    telegram.add_chat(USER)
    sent = await bot.send_message(USER, "Transcribing…", reply_markup=keyboard("cancel:17"))
    with pytest.raises(ValueError, match="no button"):
        telegram.press_button(USER, USER, sent.message_id, "other")
    raw = telegram.press_button(USER, USER, sent.message_id, "cancel:17")
    update = Update.de_json(raw, bot)
    query = update.callback_query
    assert query is not None and query.data == "cancel:17" and query.from_user.username == "ada"
    assert isinstance(query.message, Message) and query.message.message_id == sent.message_id
    assert query.message.chat.id == USER and query.message.reply_markup == keyboard("cancel:17")
    assert await bot.answer_callback_query(query.id, text="Cancelled")
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(query.id)


async def test_voice_update_parsed_by_ptb(telegram: FakeTelegram, bot: Bot) -> None:
    ref = telegram.add_file(b"OggS")
    telegram.send_text(GROUP, USER, "earlier")
    raw = telegram.send_voice(GROUP, USER, ref, duration=12, forward_from=99, reply_to=1)
    message = Update.de_json(raw, bot).message
    assert message is not None and message.voice is not None
    assert (message.voice.file_id, message.voice.duration, message.voice.mime_type) == (
        ref.file_id,
        timedelta(seconds=12),
        "audio/ogg",
    )
    assert isinstance(message.forward_origin, MessageOriginUser) and message.forward_origin.sender_user.id == 99
    assert message.chat.type == "supergroup" and message.chat.title and message.reply_to_message is not None
    hidden = telegram.send_voice(GROUP, USER, ref, duration=1, forward_from="Secret Sam")
    origin = Update.de_json(hidden, bot).message.forward_origin  # type: ignore[union-attr]
    assert isinstance(origin, MessageOriginHiddenUser) and origin.sender_user_name == "Secret Sam"
    with pytest.raises(ValueError, match="private chat"):
        telegram.send_text(USER, USER + 1, "not my chat")


async def test_other_media_builders_parse(telegram: FakeTelegram, bot: Bot) -> None:
    ref = telegram.add_file(b"media")
    audio = telegram.send_audio(USER, USER, ref, duration=5, file_name="song.mp3", title="Song")
    note = telegram.send_video_note(USER, USER, ref, duration=4)
    video = telegram.send_video(USER, USER, ref, duration=3, caption="clip")
    doc = telegram.send_document(USER, USER, ref, mime_type="audio/wav", file_name="memo.wav")
    parsed = [Update.de_json(raw, bot).message for raw in (audio, note, video, doc)]
    assert parsed[0].audio.file_name == "song.mp3"  # type: ignore[union-attr]
    assert parsed[1].video_note.length == 384  # type: ignore[union-attr]
    assert parsed[2].video.duration == timedelta(seconds=3) and parsed[2].caption == "clip"  # type: ignore[union-attr]
    assert parsed[3].document.mime_type == "audio/wav"  # type: ignore[union-attr]
    assert [m.message_id for m in parsed] == [1, 2, 3, 4]  # type: ignore[union-attr]


async def test_wait_for_timeout_reports_calls(telegram: FakeTelegram, bot: Bot) -> None:
    await bot.get_me()
    with pytest.raises(AssertionError, match=r"(?s)sent_messages.*getMe -> 200"):
        await telegram.wait_for(lambda tg: tg.sent_messages(), timeout=0.2)


async def test_a_call_is_listed_only_with_its_parameters(telegram: FakeTelegram) -> None:
    """A test waiting for a call must never see it before its body is read (it would read
    empty parameters): the request body here arrives in two halves, 0.3 s apart."""
    body = b'{"callback_query_id": "7", "text": "gone"}'
    halves_sent = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:10]
        await asyncio.sleep(0.3)
        halves_sent.set()
        yield body[10:]

    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(
            f"{telegram.base_url}{telegram.token}/answerCallbackQuery", data=slowly(),
            headers={"Content-Type": "application/json"},
        ))
        seen: list[dict[str, object]] = []
        while not halves_sent.is_set():
            seen += [call.params for call in telegram.calls("answerCallbackQuery")]
            await asyncio.sleep(0.01)
        async with await request:
            pass
    [call] = telegram.calls("answerCallbackQuery")
    assert call.params == {"callback_query_id": "7", "text": "gone"}
    assert seen == []


def test_background_thread_mode_for_sync_code() -> None:
    async def talk(fake: FakeTelegram) -> str:
        async with Bot(**fake.bot_kwargs()) as client:
            [update] = await client.get_updates(timeout=1)
            assert update.message is not None
            await client.send_message(update.message.chat.id, "pong")
            return update.message.text or ""

    with FakeTelegram() as fake:
        fake.send_text(USER, USER, "ping")
        assert asyncio.run(talk(fake)) == "ping"
        [sent] = fake.wait_for_sync(lambda tg: tg.sent_messages(USER), timeout=2)
        assert sent.text == "pong"


async def test_ptb_application_polls_replies_and_confirms(telegram: FakeTelegram) -> None:
    async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(
            f"history {context.args}", reply_markup=keyboard("more"), do_quote=True
        )

    async def more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer()
        await update.callback_query.edit_message_text("page 2")

    kwargs = telegram.bot_kwargs()
    application = (
        ApplicationBuilder()
        .token(kwargs["token"])
        .base_url(kwargs["base_url"])
        .base_file_url(kwargs["base_file_url"])
        .build()
    )
    application.add_handler(CommandHandler("history", history))
    application.add_handler(CallbackQueryHandler(more))
    async with application:
        assert application.updater is not None
        await application.start()
        await application.updater.start_polling(poll_interval=0, timeout=1)
        try:
            telegram.send_text(USER, USER, "/history 3")
            [reply] = await telegram.wait_for(lambda tg: tg.sent_messages(USER))
            assert (reply.text, reply.reply_to_message_id) == ("history ['3']", 1)
            telegram.press_button(USER, USER, reply.message_id, "more")
            await telegram.wait_for(lambda tg: tg.sent_messages(USER)[0].text == "page 2")
        finally:
            await application.updater.stop()
            await application.stop()
    assert telegram.pending_updates() == []  # the last offset was confirmed on stop
    assert [call.status for call in telegram.calls("answerCallbackQuery")] == [200]
