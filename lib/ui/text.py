"""Showing text that users typed (names, run names) on a page as plain text.

Streamlit renders st.markdown, st.caption, st.info, labels and the like as
markdown with some HTML, so a user name such as `[Sign in again](https://x)`
would become a live link on every classmate's page. Everything a user can type
goes through `as_plain_markdown` before it is interpolated into such text.
"""
from __future__ import annotations

import html

# Every character CommonMark lets a backslash escape: escaping all of them is
# simpler to trust than deciding which ones matter in which position.
_MARKDOWN_SPECIALS = frozenset("\\`*_{}[]()#+-.!|~>:\"'$%=^,;?@/")


def as_plain_markdown(text: str) -> str:
    """`text` escaped so Streamlit's markdown shows it literally.

    `<`, `>` and `&` become HTML entities (no tag, no entity from the user
    survives); every other markdown punctuation character gets a backslash.
    `$` is escaped too because Streamlit renders `$...$` as LaTeX.
    """
    escaped = []
    for char in str(text):
        if char in "<>&":
            escaped.append(html.escape(char, quote=False))
        elif char in _MARKDOWN_SPECIALS:
            escaped.append("\\" + char)
        else:
            escaped.append(char)
    return "".join(escaped)


def as_plain_html(text: str) -> str:
    """`text` escaped for plotly, whose titles, legend entries and hover text
    render a subset of HTML (`<b>`, `<a href>`, `<br>`): the characters that
    could open a tag or an entity become entities, which plotly shows as the
    characters themselves."""
    return html.escape(str(text), quote=False)
