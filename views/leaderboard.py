"""Leaderboard: the class ranking on the hidden test labels, public part for everyone, private
part for the instructors, refreshed while jobs finish."""
from __future__ import annotations

import streamlit as st

from lib.base import config
from lib.eval.cutoffs import load_settings
from lib.explore import leaderboard as board
from lib.jobs.queue import is_instructor
from lib.ui import leaderboard as board_ui
from lib.ui.runs import acting_names
from lib.ui.text import as_plain_markdown
from views.common import runs_dir, show_error, user_name

REFRESH_S = 10.0

st.title("Leaderboard")
st.caption("Every run's best checkpoint scores the course's test pairs, whose labels only the server holds. "
           "Like Kaggle, the board shows a **public** AUC on part of the pairs; the **private** AUC on the rest "
           "decides the final ranking, so tuning a model to the public board does not pay. One row per "
           "person: their best run by public AUC.")
me = acting_names(st.user, user_name())
instructor = is_instructor(me)
try:
    settings = load_settings()
    with st.spinner("Loading the test pairs..."):
        test_set = board.load_test_set(settings)
except board.NotConfigured as err:
    st.info(f"The leaderboard is not set up on this host: {as_plain_markdown(str(err))}.", icon=":material/info:")
    st.stop()
except ValueError as err:
    if instructor:  # the details name the labels file and its problems: for the people who set it up
        show_error(f"The leaderboard cannot be computed: {as_plain_markdown(str(err))}",
                   "Fix the leaderboard settings named above and reload the page.")
    else:
        st.info("The leaderboard is not available right now; your instructor has been shown why.",
                icon=":material/info:")
    st.stop()
public_pairs = int(test_set.public.sum())
st.caption(f"{len(test_set.labels):,} test pairs: {public_pairs:,} public, "
           f"{len(test_set.labels) - public_pairs:,} private (a fixed split).")


@st.fragment(run_every=REFRESH_S)
def ranking() -> None:
    with st.spinner("Scoring new checkpoints..."):
        data = board.board_entries(runs_dir(), test_set)
    ranked, private_ranks = board_ui.standings(data.entries)
    if not ranked:
        st.info("No run is on the board yet: a run appears once it has saved a best checkpoint.",
                icon=":material/hourglass_top:")
        return
    st.markdown(board_ui.my_rank_text(ranked, me))
    rows = board_ui.board_rows(ranked, private_ranks, me, show_private=instructor)
    st.dataframe(rows, hide_index=True, placeholder=board_ui.EMPTY, key="leaderboard.table", column_config={
        "public AUC": st.column_config.NumberColumn(format="%.4f"),
        "private AUC": st.column_config.NumberColumn(format="%.4f")})
    if instructor:
        st.caption(f"You see the private columns as an instructor ({config.INSTRUCTORS_ENV}). Split: seed "
                   f"{settings.seed}, public share {settings.public_share:.0%} ({config.CUTOFFS_ENV}).")
        for problem in data.skipped:
            st.caption(f"Not scored: {as_plain_markdown(problem)}")


ranking()
