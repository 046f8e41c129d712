"""/search: the caller's transcripts containing all the words, best match first, and its paging buttons.

The privacy rules every path here keeps are in `bot.telegram.handlers.stored`.
"""

from __future__ import annotations

import re

from telegram import Update

from bot.storage import Page, SearchHit
from bot.telegram import render, replies
from bot.telegram.context import Context
from bot.telegram.handlers.stored import ID, OFFSET, clamped_page, command, edit_list, pressed
from bot.telegram.scope import Scope

SEARCH_PAGE = re.compile(rf"srch:({ID}):({OFFSET})\Z")
#: Longer queries are cut (the search uses at most 16 words anyway) so the heading stays short.
MAX_QUERY_CHARS = 200


async def on_search(update: Update, context: Context) -> None:
    """`/search words`: the first page of matches."""
    message, scope = command(update)
    if message is None or scope is None:
        return
    query = " ".join(" ".join(context.args or []).split())[:MAX_QUERY_CHARS]
    if not query:
        await message.reply_text(replies.SEARCH_USAGE)
        return
    page = await _page(context, scope, query, 0)
    await message.reply_html(render.search_html(page, scope, query), reply_markup=render.search_keyboard(page, scope))


async def on_search_button(update: Update, context: Context) -> None:
    """«Previous» / «Next» under search results; the query is read back from the message."""
    found = await pressed(update, SEARCH_PAGE)
    if found is None:
        return
    press, message, match, scope = found
    first_line = (message.text or "").partition("\n")[0]
    query = first_line.removeprefix(replies.SEARCH_HEADER)[:MAX_QUERY_CHARS]
    if not first_line.startswith(replies.SEARCH_HEADER) or not query:
        await press.answer(replies.STALE_BUTTON)
        return
    page = await _page(context, scope, query, int(match.group(2)))
    await press.answer()
    await edit_list(context, message, render.search_html(page, scope, query), render.search_keyboard(page, scope))


async def _page(context: Context, scope: Scope, query: str, offset: int) -> Page[SearchHit]:
    search = context.bot_data.storage.search
    return await clamped_page(
        lambda at: search.find(scope.user_id, query, chat_id=scope.chat_id, offset=at, limit=render.PAGE_SIZE),
        offset,
    )
