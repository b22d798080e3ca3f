"""The competition's submission files of a checkpoint, made on request and offered for download
(shared by the Inspect and Runs pages)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from lib.explore import submission
from lib.explore.models import ExploreModel
from lib.ui.text import as_plain_markdown
from views.common import show_error

TASK_TITLES = {"verification": "verification (scores of test_pairs.txt)",
               "classification": "classification (identities of cls_data/test)"}


def available_tasks(root: Path) -> list[str]:
    tasks = ["verification"] if submission.has_test_pairs(root) else []
    return tasks + (["classification"] if submission.has_test_images(root) else [])


def submission_downloads(label: str, load: Callable[[], ExploreModel], identity: str, root: Path, key: str) -> None:
    """Buttons that make a checkpoint's submission CSVs on the data set ``root``, then download
    buttons for them. ``load`` opens the model only when asked; ``identity`` names the checkpoint's
    current weights, so a file made for an older best checkpoint is not offered."""
    st.subheader("Submission for the competition")
    tasks = available_tasks(root)
    if not tasks:
        st.info(f"No submission: {as_plain_markdown(submission.no_test_pairs_message(root))}.", icon=":material/info:")
        return
    st.caption("`ID,Label`: the test pairs' 0-based row and their cosine similarity, in file order; or each test "
               "image's file name and predicted identity. The same file as `python -m lib submit`.")
    for task in tasks:
        made_key = f"{key}.csv.{task}.{identity}.{root}"
        row = st.container(horizontal=True)
        if row.button(f"Make the {TASK_TITLES[task]} file", key=f"{key}.make.{task}", icon=":material/description:"):
            try:
                with st.spinner("Embedding the test images..."):
                    st.session_state[made_key] = submission.submission_csv(load(), root, task)
            except ValueError as err:
                show_error(f"No {task} submission: {as_plain_markdown(str(err))}",
                           "Pick the data set with the course's test files in the sidebar, or another checkpoint.")
        if made_key in st.session_state:
            row.download_button(f"Download {task} CSV", data=st.session_state[made_key],
                                file_name=submission.submission_name(label, task), mime="text/csv",
                                key=f"{key}.download.{task}", on_click="ignore", icon=":material/download:")
