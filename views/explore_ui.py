"""Small display helpers shared by the Explore pages (Embeddings, Saliency, Margins, Inspect)."""
from __future__ import annotations

import streamlit as st

from lib.ui.explore_text import lesson


def show_lesson(number: int, expanded: bool = True) -> None:
    """Curriculum item ``number`` as a short boxed note beside what demonstrates it."""
    title, text = lesson(number)
    if expanded:
        with st.container(border=True):
            st.markdown(f"**{title}**  \n{text}")
    else:
        with st.expander(title):
            st.markdown(text)
