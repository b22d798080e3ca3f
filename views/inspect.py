"""Inspect: open any checkpoint (a demo, a run's best, or an upload) and see what it holds:
spec, counts, metrics, training curves, then its embeddings and a saliency map."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib.eval import confidence, projection, saliency
from lib.explore import inspection as explore_inspect
from lib.explore import metrics as explore_metrics
from lib.explore import models as explore
from lib.explore import saliency as explore_saliency
from lib.explore import scope as explore_scope
from lib.store import upload
from lib.ui import explore_figures as figs
from lib.ui import leaderboard as board_ui
from lib.ui.text import as_plain_markdown
from views import explore_state as state
from views.common import data_root, show_error
from views.explore_ui import show_lesson
from views.foreign_ui import open_foreign, show_foreign_facts
from views.submission_ui import submission_downloads

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
    st.caption("A **FaceLab checkpoint**: a run folder as .zip, or model.safetensors + meta.json (and "
               "loss.safetensors if the loss has weights). Or **your own HW2P2 model**: one .pth/.pt/.bin state "
               "dict of a torchvision architecture (plain, or the notebook's checkpoint dict), one .onnx export, or "
               f"one .safetensors. Up to {upload.MAX_FILE_BYTES // 2**20} MB each. Pickles are read with "
               "torch.load(weights_only=True): one that asks to run code is refused.")
    files = st.file_uploader("Model files", type=["zip", "safetensors", "json", "pth", "pt", "bin", "onnx"],
                             accept_multiple_files=True, key="inspect.upload")
    if not files:
        st.info("Upload a checkpoint or a model to inspect it.", icon=":material/upload:")
        st.stop()
    named = [(f.name, f.getvalue()) for f in files]
    if upload.is_facelab_upload([name for name, _ in named]):
        try:
            uploaded = upload.load_upload(named)
            model = explore_inspect.from_upload(uploaded, f"upload {uploaded.fingerprint[:8]}")
        except ValueError as err:
            show_error(f"This upload cannot be used: {as_plain_markdown(str(err))}",
                       "Upload the files FaceLab writes for a checkpoint (see the note above), unchanged.")
            st.stop()
        rows = uploaded.metrics_rows
        for note in uploaded.notes:
            st.success(f"Loaded: {as_plain_markdown(note)}.", icon=":material/check:")
    else:
        model = open_foreign(named, state.image_side(str(data_root())))

left, right = st.columns([3, 2])
with left:
    st.subheader("What it is")
    if model.meta is None:  # a model made elsewhere: no spec, counted on the real module
        show_foreign_facts(model, int(st.session_state.get("inspect.foreign.size", 112)))
    else:
        facts = explore_inspect.facts(model.meta.spec, model.meta)
        st.dataframe([{"": key, "value": value} for key, value in facts.items()], hide_index=True,
                     key="inspect.facts")
        st.dataframe(explore_inspect.stage_table(model.meta.spec), hide_index=True, key="inspect.stages")
with right:
    show_lesson(33)
    if folder:
        st.table(explore_inspect.files_table(model.folder), hide_index=True)  # a table wraps the long "holds"
if model.meta is None:
    st.caption("A model made elsewhere records no training metrics; its numbers on this data set are below.")
    meta_metrics = {}
else:
    meta_metrics = model.meta.metrics
headline = explore_inspect.headline_metrics(model.meta) if model.meta else {}
if headline:
    st.subheader("Metrics at the best epoch (recorded in training)")
    for cell, (title, value) in zip(st.columns(len(headline)), headline.items()):
        cell.metric(title, value)
for line in board_ui.cutoff_lines(meta_metrics):  # validation numbers against the course's cut-offs
    st.caption(line)
figure = explore_inspect.curves_figure(rows)
if figure is not None:
    st.plotly_chart(figure, key="inspect.curves")
if model.meta is not None:
    with st.expander("Spec and training config (JSON)"):
        st.json({"spec": model.meta.spec.to_dict(), "config": model.meta.config}, expanded=False)

submission_downloads(model.label, lambda: model, model.fingerprint, data_root(), "inspect")

st.subheader("Its embeddings and what it looks at")
if not st.toggle("Embed the dev and verification images (cached after the first time)", key="inspect.embed"):
    st.stop()
root = str(data_root())
has_dev = "dev" in explore_scope.image_kinds(root)  # a verification-only data set has none
try:
    ver = state.images(root, "verification")
    dev = state.images(root, "dev") if has_dev else None
    pairs, pair_labels = state.pair_data(root)
    bar = st.progress(0.0, text="Embedding the images...")
    raw_dev = explore.cached_embeddings(model, dev.images, lambda f: bar.progress(f / 2), dev.fingerprint) \
        if has_dev else None
    raw_ver = explore.cached_embeddings(model, ver.images, lambda f: bar.progress(0.5 + f / 2), ver.fingerprint)
    bar.empty()
except ValueError as err:
    show_error(f"This checkpoint does not fit the data set: {as_plain_markdown(str(err))}",
               "Pick the data set it was trained on.")
    st.stop()
scope = explore_scope.model_scope(model, root, ver.paths)
view = explore_metrics.verification_view(raw_ver, pairs, pair_labels, state.pair_folds(root))
shown, raw_shown = (dev, raw_dev) if has_dev else (ver, raw_ver)
row = explore_metrics.metrics_row(view, explore_metrics.dev_top1(model, dev, raw_dev, scope) if has_dev else None,
                                  explore_metrics.angles(raw_shown, shown.labels))
if scope.data_notes():
    st.info("  \n".join(as_plain_markdown(note) for note in scope.data_notes()), icon=":material/info:")
left, right = st.columns([3, 2])
with left:
    coords = projection.project(explore.unit(raw_shown), "pca", 2)
    title = "Dev identities (PCA)" if has_dev else "Verification identities (PCA)"
    st.plotly_chart(figs.scatter_2d(coords, shown, shown.top_identities(10), None, title, True),
                    key="inspect.scatter")
with right:
    st.dataframe(explore_metrics.metrics_table({model.label: row}), hide_index=True, key="inspect.metrics")
    st.caption(confidence.RULE)
    st.caption(as_plain_markdown(scope.pairs_sentence()))
if not has_dev:
    st.caption(f"No class-score saliency: {explore_scope.NO_DEV_REASON}. The Saliency page explains the "
               "verification pairs.")
    st.stop()
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
