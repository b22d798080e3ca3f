"""The "Embeddings over time" section of the Embeddings page: a run's probe faces, epoch by epoch."""
from __future__ import annotations

import streamlit as st

from lib.explore.over_time import epoch_table, probe_history, runs_with_probes, shared_pca
from lib.ui import explore_text
from lib.ui.over_time_figure import over_time_figure


def over_time_section(runs_dir) -> None:
    st.header("Embeddings over time")
    folders = runs_with_probes(runs_dir)
    if not folders:
        st.info("No run has saved probe embeddings yet. Runs trained now embed a fixed set of dev faces after "
                "every epoch; train one on the Train page (two or more epochs) and watch them move here.",
                icon=":material/info:")
        return
    labels = {str(folder.folder): folder.label() for folder in folders}
    chosen = st.selectbox("Run", list(labels), index=len(labels) - 1, format_func=labels.get,
                          key="embeddings.over_time_run", help="Runs that saved their probe faces' embeddings.")
    history = probe_history(chosen)
    if history is None:
        st.info("This run's probe files cannot be read (cut short, or from another version).", icon=":material/info:")
        return
    table = epoch_table(history)
    left, right = st.columns([3, 2])
    left.plotly_chart(over_time_figure(history, shared_pca(history), table), key="embeddings.over_time")
    with right:
        numbers = ("same identity", "different identities", "gap")
        st.dataframe(table, hide_index=True, key="embeddings.over_time_table",
                     column_config={key: st.column_config.NumberColumn(format="%.3f") for key in numbers})
        st.caption(f"Mean cosine of two faces of the same identity, and of two different identities, among the "
                   f"{len(history.paths)} probe faces ({len(set(history.identities))} dev identities, the same "
                   f"images every epoch). " + explore_text.OVER_TIME)
