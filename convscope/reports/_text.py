"""User text in rich output: names, references and notes come from users' files and models, and
rich would read ``[/]`` or ``[link=…]`` in them as markup (an error, or a changed name)."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text

from convscope.units import printable

__all__ = ["esc", "plain"]


def esc(text: object) -> str:
    """``text`` for an f-string that rich prints as markup: shown as written."""
    return escape(printable(text))


def plain(text: object) -> Text:
    """``text`` as a table cell or a line that rich does not read as markup."""
    return Text(printable(text))
