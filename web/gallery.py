"""The gallery grid: newest first, search, filters and a keyset cursor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from engine import ImageQuery, ImageRecord, InvalidRequest
from web.context import Context, ctx
from web.fields import parse_day
from web.images import may_see_sensitive

bp = Blueprint("gallery", __name__)

SOURCES = ("discord", "web")
FILTER_KEYS = (
    "q",
    "source",
    "author",
    "author_name",
    "since",
    "until",
    "favourites",
    "style",
    "mine",
)
# Filters folded behind "Filters" on narrow screens; open when one of them is in use.
NARROWING_KEYS = ("source", "author_name", "since", "until", "favourites")


@dataclass(frozen=True)
class Page:
    """One page of the gallery and the cursor of the next."""

    images: list[ImageRecord]
    next_cursor: int | None


def query_from(args: Mapping[str, str], context: Context, limit: int) -> ImageQuery:
    """Build an ImageQuery from URL arguments; raise InvalidRequest naming a bad one."""
    source = args.get("source", "").strip() or None
    if source is not None and source not in SOURCES:
        raise InvalidRequest("source", f"expected one of {', '.join(SOURCES)}")
    cursor = args.get("cursor", "").strip()
    if cursor and not (cursor.isascii() and cursor.isdigit() and int(cursor) < 2**63):
        raise InvalidRequest("cursor", "expected a cursor from a previous page")
    favourites_of = None
    if args.get("favourites", "") in ("1", "true", "on"):
        favourites_of = context.access.requester().key
    author_id = args.get("author", "").strip()[:100] or None
    if args.get("mine", "") in ("1", "true", "on"):
        # My images: the signed-in person's (from Discord and the web alike), else this browser's.
        me = context.access.requester()
        source, author_id = me.source, me.user_id
    return ImageQuery(
        text=args.get("q", "")[:200],
        source=source,
        author_id=author_id,
        author_name=args.get("author_name", "").strip()[:100] or None,
        since=parse_day(args.get("since"), "since"),
        until=parse_day(args.get("until"), "until", end=True),
        favourites_of=favourites_of,
        style=args.get("style", "").strip()[:64] or None,
        include_nsfw=may_see_sensitive(context),
        before=int(cursor) if cursor else None,
        limit=limit,
    )


def fetch(query: ImageQuery, context: Context) -> Page:
    """Return one page and the cursor of the next (the store stops at one page)."""
    found = context.library.page(query)
    return Page(found.images, found.next_cursor)


@bp.get("/")
def index() -> ResponseReturnValue:
    """Show the grid."""
    context = ctx()
    context.access.require_browse()
    args = {k: request.args.get(k, "") for k in (*FILTER_KEYS, "cursor")}
    try:
        query = query_from(args, context, context.settings.web.page_size)
    except InvalidRequest as error:
        html = render_template(
            "gallery.html", page=Page([], None), args=args, error=error, is_narrowed=True
        )
        return html, 400
    page = fetch(query, context)
    next_url = None
    if page.next_cursor is not None:
        kept = {k: v for k, v in args.items() if v and k != "cursor"}
        next_url = "/?" + urlencode({**kept, "cursor": page.next_cursor})
    is_filtered = any(args[k] for k in FILTER_KEYS)
    person = context.access.person()
    return render_template(
        "gallery.html",
        page=page,
        asks_age=person is not None
        and context.access.is_member()
        and context.settings.web.nsfw_images != "hide"
        and not may_see_sensitive(context),
        args=args,
        next_url=next_url,
        is_first_page=not args["cursor"],
        is_filtered=is_filtered,
        is_narrowed=any(args[k] for k in NARROWING_KEYS),
        author_shown=_author_shown(args, page),
        without_author=urlencode(
            {k: v for k, v in args.items() if v and k not in ("author", "cursor")}
        ),
        style_shown=args["style"].strip(),
        without_style=urlencode(
            {k: v for k, v in args.items() if v and k not in ("style", "cursor")}
        ),
        error=None,
    )


def _author_shown(args: Mapping[str, str], page: Page) -> str:
    """Return the name of the author the grid is narrowed to by a link (author=<id>)."""
    author = args.get("author", "")
    if not author:
        return ""
    named = [image.author_name for image in page.images if image.author_id == author]
    return named[0] if named and named[0] else author
