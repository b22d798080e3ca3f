"""Inspect: open any checkpoint (a demo, a run's best, or an upload) and see what it holds:
spec, counts, metrics, training curves, then its embeddings and a saliency map."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib.eval import projection, saliency
from lib.explore import inspection as explore_inspect
from lib.explore import metrics as explore_metrics
from lib.explore import models as explore
from lib.explore import saliency as explore_saliency
from lib.store import upload
from lib.ui import explore_figures as figs
from lib.ui.text import as_plain_markdown
from views import explore_state as state
from views.common import data_root, show_error
from views.explore_ui import show_lesson

st.title("Inspect a checkpoint")
source = st.radio("Checkpoint", ["saved (demos and runs)", "upload one"], key="inspect.source", horizontal=True)
model, rows, folder = None, [], None
if source.startswith("saved"):
    options = state.checkpoint_options()
    if not options:
        show_error("No checkpoint found.", "Train a model on the Train page, or upload one.")
        st.stop()
    label = st.selectbox("Which", list(options), index=state.default_index(options), key="inspect.which")
    folder = options[label]
    try:
        model = state.open_model(folder, label)
    except ValueError as err:
        show_error(f"This checkpoint cannot be opened: {as_plain_markdown(str(err))}",
                   "Pick another one; if it is a run, it may still be writing its first checkpoint.")
        st.stop()
    rows = explore_inspect.run_metrics(Path(folder))
else:
    st.caption("A run folder as **.zip**, or **model.safetensors + meta.json** (and loss.safetensors if the loss "
               f"has weights). Up to {upload.MAX_FILE_BYTES // 2**20} MB each. Pickled .pt/.pth files are never "
               "opened: they can run code.")
    files = st.file_uploader("Checkpoint files", type=["zip", "safetensors", "json"], accept_multiple_files=True,
                             key="inspect.upload")
    if not files:
        st.info("Upload a checkpoint to inspect it.", icon=":material/upload:")
        st.stop()
    try:
        uploaded = upload.load_upload([(f.name, f.getvalue()) for f in files])
    except ValueError as err:
        show_error(f"This upload cannot be used: {as_plain_markdown(str(err))}",
                   "Upload the files FaceLab writes for a checkpoint (see the note above), unchanged.")
        st.stop()
    model = explore_inspect.from_upload(uploaded, f"upload {uploaded.fingerprint[:8]}")
    rows = uploaded.metrics_rows
    for note in uploaded.notes:
        st.success(f"Loaded: {as_plain_markdown(note)}.", icon=":material/check:")

spec = model.model.spec
left, right = st.columns([3, 2])
with left:
    st.subheader("What it is")
    facts = explore_inspect.facts(spec, model.meta)
    st.dataframe([{"": key, "value": value} for key, value in facts.items()], hide_index=True, key="inspect.facts")
    st.dataframe(explore_inspect.stage_table(spec), hide_index=True, key="inspect.stages")
with right:
    show_lesson(33)
    if folder:
        st.table(explore_inspect.files_table(model.folder), hide_index=True)  # a table wraps the long "holds"
headline = explore_inspect.headline_metrics(model.meta)
if headline:
    st.subheader("Metrics at the best epoch (recorded in training)")
    for cell, (title, value) in zip(st.columns(len(headline)), headline.items()):
        cell.metric(title, value)
figure = explore_inspect.curves_figure(rows)
if figure is not None:
    st.plotly_chart(figure, key="inspect.curves")
with st.expander("Spec and training config (JSON)"):
    st.json({"spec": spec.to_dict(), "config": model.meta.config}, expanded=False)

st.subheader("Its embeddings and what it looks at")
if not st.toggle("Embed the dev and verification images (cached after the first time)", key="inspect.embed"):
    st.stop()
root = str(data_root())
try:
    dev, ver = state.images(root, "dev"), state.images(root, "verification")
    pairs, pair_labels = state.pair_data(root)
    bar = st.progress(0.0, text="Embedding the images...")
    raw_dev = explore.cached_embeddings(model, dev.images, lambda f: bar.progress(f / 2), dev.fingerprint)
    raw_ver = explore.cached_embeddings(model, ver.images, lambda f: bar.progress(0.5 + f / 2), ver.fingerprint)
    bar.empty()
except ValueError as err:
    show_error(f"This checkpoint does not fit the data set: {as_plain_markdown(str(err))}",
               "Pick the data set it was trained on.")
    st.stop()
view = explore_metrics.verification_view(raw_ver, pairs, pair_labels, state.pair_folds(root))
row = explore_metrics.metrics_row(view, explore_metrics.dev_top1(model, dev, raw_dev),
                                  explore_metrics.angles(raw_dev, dev.labels))
left, right = st.columns([3, 2])
with left:
    coords = projection.project(explore.unit(raw_dev), "pca", 2)
    st.plotly_chart(figs.scatter_2d(coords, dev, dev.top_identities(10), None, "Dev identities (PCA)", True),
                    key="inspect.scatter")
with right:
    st.dataframe(explore_metrics.metrics_table({model.label: row}), hide_index=True, key="inspect.metrics")
face_col, map_col = st.columns([1, 3])
index = face_col.slider("Dev image", 0, len(dev.labels) - 1, 0, key="inspect.face")
method = face_col.selectbox("Saliency method", list(saliency.METHODS), key="inspect.method",
                            index=list(saliency.METHODS).index("gradcam"),
                            format_func=lambda m: saliency.METHODS[m].title)
face = explore_saliency.explain_face(model, dev.images[index], method, "predicted", stage_from_end=1)
true_name = figs.markdown_name(dev.names[dev.labels[index]])
map_col.markdown(explore_saliency.verdict_markdown(figs.markdown_name(face.predicted), true_name))
map_col.image([dev.images[index].permute(1, 2, 0).numpy(), saliency.overlay(dev.images[index], face.heat)],
              width=192, caption=[true_name, f"explains {figs.markdown_name(face.target)} ({face.confidence})"])
