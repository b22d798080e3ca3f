"""Saliency: what each checkpoint looks at, for a class score and for a verification pair,
the same face side by side across checkpoints."""
from __future__ import annotations

import streamlit as st

from lib.eval import saliency
from lib.explore import saliency as explore_saliency
from lib.explore import scope as explore_scope
from lib.ui.explore_figures import markdown_name, pretty
from lib.ui.text import as_plain_markdown
from views import explore_state as state
from views.common import data_root, show_error
from views.explore_ui import show_lesson

st.title("Saliency: what the network looks at")
options = state.checkpoint_options()
if not options:
    show_error("No checkpoint found.", "Train a model on the Train page, or put the demo checkpoints in "
               "`checkpoints/`.")
    st.stop()

# The picker gets a row of its own: four checkpoint tags fit at 1280 px only at full width.
chosen = st.multiselect("Checkpoints (1 to 4)", list(options), state.default_selection(options),
                        max_selections=4, key="saliency.checkpoints")
MODES = ["a class score (one face)", "a pair's similarity (verification)"]
root = str(data_root())
has_dev = "dev" in explore_scope.image_kinds(root)
if not has_dev:  # a verification-only data set: no face has a class, only pairs can be explained
    st.session_state["saliency.mode"] = MODES[1]
mode = st.radio("Explain", MODES, key="saliency.mode", disabled=not has_dev, horizontal=True)
if not has_dev:
    st.caption(f"Class scores cannot be explained here: {explore_scope.NO_DEV_REASON}. Pairs can.")
pair_mode = mode.startswith("a pair")
if not chosen:
    show_error("No checkpoint chosen.", "Pick one to four checkpoints above.")
    st.stop()
try:
    models = [state.open_model(options[label], label) for label in chosen]
    if pair_mode:
        pairs = state.images(root, "verification")
        pair_index, pair_labels = state.pair_data(root)
    else:
        dev = state.images(root, "dev")
except ValueError as err:
    show_error(f"This checkpoint or data set cannot be used: {as_plain_markdown(str(err))}", "Pick another one.")
    st.stop()
side = (pairs if pair_mode else dev).images.shape[-1]
stages = [name for name, _ in saliency.stage_choices(models[0].model, side)][::-1]  # counted from the last
row = st.columns([2, 2, 3, 2])  # the stage labels are the longest
method = row[0].selectbox("Method", list(saliency.METHODS), index=list(saliency.METHODS).index("gradcam"),
                          key="saliency.method",
                          format_func=lambda m: saliency.METHODS[m].title)
target = row[1].radio("Target class", saliency.TARGET_KINDS, key="saliency.target", disabled=pair_mode,
                      help="predicted: the class the model picks; true: the face's own identity; "
                           "chosen: any identity you pick below")
stage = row[2].selectbox("GradCAM stage", range(len(stages)), index=min(1, len(stages) - 1), key="saliency.stage",
                         disabled=not saliency.METHODS[method].uses_stage, format_func=lambda k: stages[k],
                         help=f"Stages of {as_plain_markdown(chosen[0])}, counted from the last; other checkpoints "
                              "use their stage at the same distance from the end.")
opacity = row[3].slider("Overlay opacity", 0.0, 1.0, 0.8, 0.05, key="saliency.opacity",
                        help="0 shows the face alone; higher values gray the face and color the map more strongly")
st.caption(saliency.METHODS[method].explanation)


@st.cache_data(show_spinner=False, max_entries=128)
def _face(folder: str, modified: float, label: str, root: str, index: int, method: str, kind: str,
          chosen_name: str | None, stage: int):
    model = state.load(folder, modified, label)
    dev = state.images(root, "dev")
    return explore_saliency.explain_face(model, dev.images[index], method, kind, dev.names[dev.labels[index]],
                                         chosen_name, stage)


@st.cache_data(show_spinner=False, max_entries=128)
def _pair(folder: str, modified: float, label: str, root: str, a: int, b: int, method: str, stage: int):
    model = state.load(folder, modified, label)
    images = state.images(root, "verification").images
    return explore_saliency.explain_pair(model, images[a], images[b], method, stage)


def _rgb(image):
    return image.permute(1, 2, 0).numpy()


if not pair_mode:
    pick = st.columns([2, 3, 2])
    people = dev.top_identities(len(dev.names))
    person = pick[0].selectbox("Face of", people, key="saliency.person", format_func=lambda c: pretty(dev.names[c]))
    own = [i for i, label in enumerate(dev.labels) if label == person]
    index = own[pick[1].slider("Image", 1, len(own), 1, key="saliency.image") - 1] if len(own) > 1 else own[0]
    chosen_name = pick[2].selectbox("Chosen class", dev.names, key="saliency.chosen", format_func=pretty,
                                    disabled=target != "chosen")
    columns = st.columns(len(chosen) + 1)
    columns[0].image(_rgb(dev.images[index]), caption=markdown_name(dev.names[person]), width=192)
    for column, label, model in zip(columns[1:], chosen, models):
        try:
            with st.spinner(f"{saliency.METHODS[method].title} on {as_plain_markdown(label)}..."):
                face = _face(options[label], state.mtime(options[label]), label, root, index, method, target,
                             chosen_name, stage)
        except ValueError as err:
            column.warning(as_plain_markdown(str(err)))
            continue
        column.image(saliency.overlay(dev.images[index], face.heat, opacity), width=192,
                     caption=as_plain_markdown(label))
        column.markdown(explore_saliency.verdict_markdown(markdown_name(face.predicted),
                                                          markdown_name(dev.names[person])))
        column.markdown(f"explains **{markdown_name(face.target)}** (score {face.score:.2f})  \n"
                        f"confidence of the prediction: {face.confidence}")
else:
    labeled = [p for p in range(len(pair_labels)) if pair_labels[p] >= 0]
    def _describe(p: int) -> str:
        a, b = pair_index[p]
        same = "same person" if pair_labels[p] == 1 else "different people"
        return f"{p + 1}: {pretty(pairs.names[pairs.labels[a]])} / {pretty(pairs.names[pairs.labels[b]])} ({same})"
    chosen_pair = st.selectbox("Pair from val_pairs.txt", labeled, key="saliency.pair", format_func=_describe)
    a, b = (int(v) for v in pair_index[chosen_pair])
    columns = st.columns(len(chosen) + 1)
    columns[0].image([_rgb(pairs.images[a]), _rgb(pairs.images[b])], width=160, caption=["face A", "face B"])
    for column, label in zip(columns[1:], chosen):
        with st.spinner(f"{saliency.METHODS[method].title} on {as_plain_markdown(label)}..."):
            maps = _pair(options[label], state.mtime(options[label]), label, root, a, b, method, stage)
        column.image([saliency.overlay(pairs.images[a], maps.heat_a, opacity),
                      saliency.overlay(pairs.images[b], maps.heat_b, opacity)], width=160,
                     caption=[f"{as_plain_markdown(label)}: A", f"{as_plain_markdown(label)}: B"])
        column.markdown(f"cosine similarity **{maps.cosine:.3f}**")
    st.caption("Each map explains the pair's cosine similarity through one face, the other face's embedding "
               "held fixed: the regions that make the two faces look alike (or not) to this model.")

st.caption("Red = most influence on the explained score, blue = little. Maps are scaled per image, so compare "
           "where models look, not how strong their maps are. Gradient maps are lightly smoothed (3x3) because "
           "the stem's stride 2 leaves a one-pixel checkerboard in raw gradients.")
show_lesson(32)
