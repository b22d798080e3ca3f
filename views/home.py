"""Home: what FaceLab is, the four-step workflow, and where each step lives."""
from __future__ import annotations

import streamlit as st

from lib.ui.home import demo_summary, face_strip, workflow_steps
from lib.ui.text import as_plain_markdown
from views.common import data_root

FACES = 8  # one row of faces across the page


@st.cache_data(ttl=600, show_spinner=False)
def faces(root: str) -> list:
    """A seeded strip of training faces: the same ones on every visit, decoded once per data set."""
    return face_strip(root, count=FACES, seed=0)


st.title("FaceLab")
st.markdown(
    "Learn **CNN face recognition** by doing it: build a network block by block, see what "
    "augmentation does to real faces, train it in the background, and look inside the "
    "embeddings it learns. FaceLab follows the workflow of CMU 11-785's HW2P2."
)

left, right = st.columns(2)
with left:
    st.subheader("Two tasks, one network")
    st.markdown(
        "- **Classification** (closed set): which of the *known* identities is this face? "
        "The network ends in a classifier over the training identities.\n"
        "- **Verification** (open set): are these two faces the *same person*, even someone never "
        "seen in training? Compare the two **embeddings** (the features before the classifier) with "
        "cosine similarity and a threshold."
    )

with right:
    st.subheader("The data in use")
    st.markdown(f"**{as_plain_markdown(data_root().name)}**: faces in the HW2P2 layout (`cls_data/train`, "
                "`cls_data/dev`, `ver_data`, `val_pairs.txt`). Pick another data set in the sidebar.")

strip = faces(str(data_root()))  # full width: one row of faces, names under them
if strip:
    st.image([picture for picture, _ in strip], width=100,
             caption=[as_plain_markdown(name.replace("_", " ")) for _, name in strip])
    st.caption(f"{len(strip)} training faces of {as_plain_markdown(data_root().name)}, each of another person and "
               "labelled with its identity (its folder name): the classifier learns these names; verification "
               "compares faces of people it never saw.")

st.subheader("The workflow")
for step in workflow_steps():
    with st.container(border=True):
        cols = st.columns([1, 3])
        cols[0].page_link(step.path, label=step.title, icon=step.icon)
        cols[1].markdown(step.summary)

demos = demo_summary()
if demos:
    st.subheader("Ready to explore: the demo checkpoints")
    st.caption("Trained by the project's own recipes on the embedded LFW-64 data "
               "(`python -m lib train recipes/<name>.json`). Verification is measured on unseen identities.")
    st.dataframe(demos, hide_index=True, width="stretch")
