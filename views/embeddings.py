"""Embeddings: CE vs ArcFace vs CosFace vs SphereFace side by side: where faces land,
how well pairs verify, and what a threshold accepts and rejects."""
from __future__ import annotations

import numpy as np
import streamlit as st

from lib.base import config
from lib.eval import confidence, projection
from lib.explore import metrics as explore_metrics
from lib.explore import neighbours
from lib.explore import scope as explore_scope
from lib.explore.models import unit
from lib.ui import explore_figures as figs
from lib.ui import explore_text
from lib.ui.text import as_plain_markdown
from views import explore_state as state
from views.common import data_root, runs_dir, show_error
from views.explore_ui import show_lesson
from views.over_time_ui import over_time_section


def _colored_slider(column, available: int) -> int:
    """How many identities get a color: at most the number this image set holds (and 16 colors)."""
    top = min(16, available)
    if top <= 3:
        return top  # too few identities to choose from: all of them in color
    start = min(10, top)
    if "embeddings.colored" in st.session_state:
        # Another data set may have left a larger choice; value=None avoids the "default and
        # Session State both set" warning once the value is set here.
        st.session_state["embeddings.colored"] = min(st.session_state["embeddings.colored"], top)
        start = None
    return column.slider("Identities in color", 3, top, start, key="embeddings.colored",
                         help="The identities with the most images here; the rest are gray.")


def _person(images, index: int) -> str:
    """The identity of image ``index``, as markdown that shows the folder's name literally."""
    return figs.markdown_name(images.names[images.labels[index]])


def neighbours_section(images, raw: dict, chosen: list[str], selected: list[int], people: list[int]) -> None:
    """The k nearest faces of one face by cosine, with their similarity and whether they are the same person."""
    st.subheader("The nearest faces of one face")
    left, right = st.columns([1, 4])
    which = left.selectbox("Embedding of", chosen, key="embeddings.nn_model")
    person = left.selectbox("Person", people, key="embeddings.nn_person",
                            format_func=lambda c: figs.pretty(images.names[c]))
    photos = np.flatnonzero(images.labels == person)
    if st.session_state.get("embeddings.nn_photo", 0) >= len(photos):
        st.session_state["embeddings.nn_photo"] = 0  # the person changed to one with fewer photos
    photo = left.selectbox("Photo", range(len(photos)), key="embeddings.nn_photo",
                           format_func=lambda i: f"{i + 1} of {len(photos)}")
    k = left.slider("Neighbours (k)", 1, 16, 7, key="embeddings.nn_k")  # 7: one row of faces at 1280 px
    clicked = list(dict.fromkeys(selected))
    query = clicked[0] if len(clicked) == 1 else int(photos[photo])
    found = neighbours.nearest(raw[which], images.labels, query, k)
    with right:
        st.image([images.images[i].permute(1, 2, 0).numpy() for i in [query] + [n.index for n in found]],
                 width=64, caption=[f"chosen: {_person(images, query)}"] + [
                     f"{n.cosine:.2f} · " + ("same person" if n.same_identity else _person(images, n.index))
                     for n in found])
        others = int((images.labels == images.labels[query]).sum()) - 1
        st.markdown(neighbours.summary_sentence(found, others))
        st.caption(explore_text.NEIGHBOURS + (" Showing the face you clicked in a plot above; clear the selection "
                                             "to pick by person." if len(clicked) == 1 else
                                             " Or click one face in a 2-D plot above."))


st.title("Embeddings: what each loss does to the face space")
options = state.checkpoint_options()
if not options:
    show_error("No checkpoint found.", "Train a model on the Train page (its best checkpoint appears here), "
               "or put the demo checkpoints in `checkpoints/`.")
    st.stop()
root = str(data_root())
kinds = explore_scope.image_kinds(root)  # a verification-only data set has no dev images
# On a course-sized set each checkpoint embeds tens of thousands of faces (about 40 s on a CPU):
# start from one checkpoint there, and let the user add the others.
try:
    large = len(state.images(root, kinds[0]).labels) > config.projected_faces()
except ValueError:
    large = False  # the data set's problem is shown below, where the images are needed
# Its own row: four tags need the page's width to stay readable.
chosen = st.multiselect("Checkpoints (1 to 4)", list(options), state.default_selection(options, large),
                        max_selections=4, key="embeddings.checkpoints",
                        help="Each checkpoint embeds every face of the data set once; later visits read the "
                             "embeddings from the cache.")
top = st.columns([1, 1])
if st.session_state.get("embeddings.images", kinds[0]) not in kinds:
    st.session_state["embeddings.images"] = kinds[0]
kind = top[0].radio("Images", kinds, key="embeddings.images", horizontal=True,
                    format_func=lambda k: {"dev": "dev identities (closed set)",
                                           "verification": "verification images (open set)"}[k])
if "dev" not in kinds:
    top[0].caption(f"No dev identities: {explore_scope.NO_DEV_REASON}.")
method = top[1].radio("Projection", ["umap", "pca", "tsne"], key="embeddings.method", horizontal=True,
                      format_func=str.upper, help="UMAP and t-SNE keep neighbourhoods (which faces lie near "
                      "which); PCA is linear and instant, but classes overlap in its 2 directions.")
if not chosen:
    show_error("No checkpoint chosen.", "Pick one to four checkpoints above.")
    st.stop()
try:
    choice = state.images(root, kind)
    progress = st.progress(0.0, text="Embedding the images...")
    raw = {}
    for index, label in enumerate(chosen):
        folder = options[label]
        for part in kinds:  # both where there are dev images: the metrics need dev top-1 and the pairs
            shown = as_plain_markdown(label)
            update = (lambda f, i=index: progress.progress((i + f) / len(chosen), text=f"Embedding with {shown}..."))
            values = state.embeddings(folder, state.mtime(folder), label, root, part, update)
            if part == kind:
                raw[label] = values
    progress.empty()
except ValueError as err:
    show_error(f"These checkpoints cannot be explored on this data set: {as_plain_markdown(str(err))}",
               "Pick another checkpoint, or the data set it was trained on in the sidebar.")
    st.stop()

show_lesson(23, expanded=False)
controls = st.columns([2, 3, 2])
view = controls[0].radio("View", ["2-D", "3-D on the sphere"], key="embeddings.view", horizontal=True)
by_count = choice.top_identities(len(choice.names))
highlight = controls[1].selectbox("Highlight an identity (in every panel, with its faces)", [None] + by_count,
                                  key="embeddings.highlight",
                                  format_func=lambda c: "none" if c is None else figs.pretty(choice.names[c]))
colored_count = _colored_slider(controls[2], len(by_count))
colored = choice.top_identities(colored_count)

effective = method
if method == "umap" and not projection.umap_ready():
    projection.warm_up_umap()
    effective = "pca"
    st.info("UMAP is starting up (importing and compiling, once per server). Showing PCA meanwhile; "
            "the plots switch by themselves when UMAP is ready.", icon=":material/hourglass_top:")

    @st.fragment(run_every=2.0)
    def _wait_for_umap() -> None:
        if projection.umap_ready():
            st.rerun()
    _wait_for_umap()

dim = 3 if view.startswith("3-D") else 2
full_choice, projected = choice, config.projected_faces()
if len(choice.labels) > projected:
    steps = sorted({n for n in (projected, 2 * projected, 4 * projected) if n < len(choice.labels)} |
                   {len(choice.labels)})
    limit = st.select_slider("Faces to project", steps,
                             key="embeddings.sample", format_func=lambda n: f"{n:,}",
                             help="A fixed sample: projecting tens of thousands of faces takes minutes and draws "
                                  "a blur. The metrics and nearest faces use every face.")
    choice, sample = full_choice.sample(limit)
    st.caption(f"Projected: {len(sample):,} of {len(full_choice.labels):,} faces, a fixed sample of whole "
               f"identities (the largest first, then others at random).")
else:
    sample = np.arange(len(choice.labels))
columns = st.columns(len(chosen))
selected: list[int] = []
with st.spinner(f"Projecting with {effective.upper()}..."):
    for index, (column, label) in enumerate(zip(columns, chosen)):
        coords = projection.project(unit(raw[label][sample]), effective, dim)
        title = label  # the projection is named in the caption: panel titles stay short
        with column:
            if dim == 2:
                fig = figs.scatter_2d(coords, choice, colored, highlight, title, show_legend=False)
                event = st.plotly_chart(fig, key=f"embeddings.scatter.{index}", on_select="rerun",
                                        selection_mode=("points", "lasso", "box"))
                selected += [int(p["customdata"]) for p in (event.selection.points if event else [])
                             if p.get("customdata") is not None]
            else:
                st.plotly_chart(figs.scatter_sphere(coords, choice, colored, highlight, title, False),
                                key=f"embeddings.sphere.{index}")
st.markdown(figs.legend_html(choice, colored), unsafe_allow_html=True)
caption = (f"{effective.upper()} projection. Each dot is one face, placed by its embedding. Hover for the name; "
           "click or lasso points to see their faces below.") if dim == 2 else \
          (f"The normalized embeddings projected to 3-D with {effective.upper()}, pushed onto the unit sphere: "
           "cosine similarity only sees directions, so this is the space verification works in.")
st.caption(caption)
if selected:
    picks = list(dict.fromkeys(selected))[:24]
    st.image([choice.images[i].permute(1, 2, 0).numpy() for i in picks], width=64,
             caption=[_person(choice, i) for i in picks])
show_lesson(24, expanded=False)
neighbours_section(full_choice, raw, chosen, [int(sample[i]) for i in selected], by_count)  # every face again
choice = full_choice

st.header("Verification side by side")
summaries = {label: state.summary(options[label], state.mtime(options[label]), label, root, kind) for label in chosen}
st.dataframe(explore_metrics.metrics_table({label: s[0] for label, s in summaries.items()}), hide_index=True,
             key="embeddings.metrics", height="content")  # every row in view, no inner scrolling
for note in explore_metrics.collapse_warnings({label: s[0] for label, s in summaries.items()}, as_plain_markdown):
    st.warning(note, icon=":material/warning:")
scopes = [state.scope(options[label], state.mtime(options[label]), label, root) for label in chosen]
st.caption(as_plain_markdown(explore_scope.shared_pairs_caption(scopes)) + " Angles are measured on the images "
           "shown above. " + confidence.RULE)
other_data = [note for scope in scopes for note in scope.data_notes()]  # trained elsewhere, no dev top-1
if other_data:
    st.info("  \n".join(as_plain_markdown(note) for note in other_data), icon=":material/info:")
left, right = st.columns([3, 2])
with left:
    st.plotly_chart(figs.roc_figure({label: (s[1][3], s[1][4]) for label, s in summaries.items()}),
                    key="embeddings.roc")
with right:
    show_lesson(25)


@st.fragment
def threshold_section() -> None:
    """Only this part reruns while the slider moves."""
    start = figs.start_threshold(summaries[chosen[0]][0]["eer_threshold"])
    # A widget keeps its value when only its default changes: the slider would show the new
    # checkpoints' EER threshold while TAR, FAR and the histograms used the old value. So the page
    # sets the value itself whenever the starting threshold changes.
    if st.session_state.get("embeddings.threshold_start") != start or "embeddings.threshold" not in st.session_state:
        st.session_state["embeddings.threshold_start"] = start
        st.session_state["embeddings.threshold"] = start
    threshold = st.slider("Threshold on the cosine similarity", -1.0, 1.0, step=0.01, key="embeddings.threshold",
                          help="It starts at the EER threshold of the first checkpoint.")
    scores = {label: (s[1][0], s[1][1]) for label, s in summaries.items()}
    cells = st.columns(len(chosen))
    for cell, label in zip(cells, chosen):
        rates = explore_metrics.rates_at(*scores[label], threshold)
        cell.metric(f"{as_plain_markdown(label)}: TAR", f"{rates['TAR']:.1%}")
        cell.metric(f"{as_plain_markdown(label)}: FAR", f"{rates['FAR']:.1%}")
    st.caption("TAR: share of same-person pairs accepted at this threshold. FAR: share of different-person "
               "pairs accepted. Slide right and both fall; a good model keeps TAR high while FAR drops.")
    st.plotly_chart(figs.histogram_figure(scores, threshold), key="embeddings.histograms")
    which = st.selectbox("Errors of", chosen, key="embeddings.errors_of")
    pair_set = state.images(root, "verification")
    scores_w, labels_w, pairs_w = summaries[which][1][:3]
    accepts, rejects = explore_metrics.errors_at(scores_w, labels_w, threshold)
    for title, found in (("False accepts: different people above the threshold", accepts),
                         ("False rejects: the same person below the threshold", rejects)):
        st.markdown(f"**{title}** ({len(found)} shown, worst first)")
        if not found:
            st.caption("none at this threshold")
        for start in range(0, len(found), 4):
            for cell, p in zip(st.columns(4), found[start:start + 4]):
                a, b = (int(j) for j in pairs_w[p])
                cell.image([pair_set.images[j].permute(1, 2, 0).numpy() for j in (a, b)], width=72)
                cell.caption(f"{_person(pair_set, a)} / {_person(pair_set, b)}: cosine {scores_w[p]:.2f}")


st.header("Pick a threshold")
threshold_section()
over_time_section(runs_dir())
