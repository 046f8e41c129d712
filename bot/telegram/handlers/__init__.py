"""Every handler of the bot, registered in one place (in the order they are tried)."""

from __future__ import annotations

from telegram import BotCommand, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, TypeHandler, filters

from bot.telegram.handlers import access, admin, buttons, commands, export, files, history, language, privacy, search
from bot.telegram.handlers.error_handler import on_error

#: Shown by Telegram's command menu (registered with set_my_commands at start-up).
COMMANDS = [
    BotCommand("help", "What I do and what I store"),
    BotCommand("history", "Your transcripts, newest first"),
    BotCommand("search", "Search your transcripts"),
    BotCommand("export", "All your transcripts as files"),
    BotCommand("transcribe", "Reply to a message to transcribe it"),
    BotCommand("auto", "Group: automatic transcription on/off"),
    BotCommand("language", "Language of this chat: de, en,ru or auto"),
    BotCommand("privacy", "Store my transcripts: on/off"),
    BotCommand("forget", "Delete everything stored about you"),
]

MEDIA = (
    filters.VOICE
    | filters.AUDIO
    | filters.VIDEO_NOTE
    | filters.VIDEO
    | filters.Document.AUDIO
    | filters.Document.VIDEO
)


def register(application: Application) -> None:
    """Access check first (group -1), then commands, files, buttons, and the error handler.

    The commands that show stored data answer new messages only: an edited command is not
    answered twice.
    """
    new = filters.UpdateType.MESSAGE
    application.add_handler(TypeHandler(Update, access.check_access), group=-1)
    application.add_handler(CommandHandler(["start", "help"], commands.on_help))
    application.add_handler(CommandHandler("auto", commands.on_auto))
    application.add_handler(CommandHandler("language", language.on_language, filters=filters.UpdateType.MESSAGE))
    application.add_handler(CommandHandler("transcribe", files.on_transcribe))
    application.add_handler(CommandHandler("history", history.on_history, filters=new))
    application.add_handler(CommandHandler("search", search.on_search, filters=new))
    application.add_handler(CommandHandler("export", export.on_export, filters=new))
    application.add_handler(CommandHandler("forget", privacy.on_forget, filters=new))
    application.add_handler(CommandHandler("privacy", privacy.on_privacy, filters=new))
    application.add_handler(CommandHandler("stats", admin.on_stats, filters=new))
    application.add_handler(CallbackQueryHandler(history.on_history_button, pattern=history.HISTORY_PAGE))
    application.add_handler(CallbackQueryHandler(search.on_search_button, pattern=search.SEARCH_PAGE))
    application.add_handler(CallbackQueryHandler(history.on_show_button, pattern=history.SHOW))
    application.add_handler(CallbackQueryHandler(privacy.on_forget_button, pattern=privacy.FORGET))
    application.add_handler(MessageHandler(MEDIA & ~filters.UpdateType.EDITED, files.on_media))
    application.add_handler(CallbackQueryHandler(buttons.on_cancel, pattern=buttons.CANCEL))
    application.add_handler(CallbackQueryHandler(buttons.on_format, pattern=buttons.FORMAT))
    application.add_handler(CallbackQueryHandler(buttons.on_unknown))
    other = filters.ChatType.PRIVATE & ~filters.COMMAND & ~filters.UpdateType.EDITED & ~MEDIA
    application.add_handler(MessageHandler(other, files.on_other))
    application.add_error_handler(on_error)
