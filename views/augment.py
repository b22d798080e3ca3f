"""Augment: build an augmentation pipeline from the registry and watch it act on real faces."""
from __future__ import annotations

from pathlib import Path

import plotly.express as px
import streamlit as st

from lib.data import advice, augment
from lib.data.datasets import channel_stats, load_pairs, load_split
from lib.data.report import check_dataset
from lib.data.transforms import BATCH_MIXES, TRANSFORMS
from lib.ui import augment_lab as lab
from lib.ui.text import as_plain_markdown
from views.common import PIPELINE_KEY, data_root, save_user_choices, show_error

NAMES_KEY, DRAFT_KEY = "augment.names", "augment.draft"  # the draft survives visits to other pages


def _key(name: str, param: str) -> str:
    return f"augment.param.{name}.{param}"


def _to_widget(spec, value):
    if spec.kind == "range":
        return tuple(value)
    return ("" if value is None else ", ".join(f"{v:g}" for v in value)) if spec.kind == "floats" else value


def _from_widget(name: str, param: str, spec, value):
    if spec.kind == "range":
        return list(value)
    if spec.kind != "floats":
        return value
    if not value.strip():
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise ValueError(f"{name} {param} = {value!r} is not a list of numbers like 0.5, 0.4, 0.3") from None


def _load(steps: list[dict]) -> None:
    st.session_state[NAMES_KEY] = [step["name"] for step in steps]
    for step in steps:
        for param, value in step["params"].items():
            st.session_state[_key(step["name"], param)] = _to_widget(TRANSFORMS[step["name"]].params[param], value)


def _import_json() -> None:
    try:
        steps = augment.pipeline_from_json(st.session_state.get("augment.json_in", ""))
        if len({s["name"] for s in steps}) < len(steps):
            raise ValueError("a transform appears twice; this editor holds each transform once")
        _load(steps)
        st.session_state["augment.import_error"] = ""
    except ValueError as error:
        st.session_state["augment.import_error"] = str(error)


def _widget(name: str, param: str, spec):
    key, label = _key(name, param), spec.label or param
    st.session_state.setdefault(key, _to_widget(spec, spec.default))
    if spec.kind == "choice":
        value = st.selectbox(label, spec.choices, key=key, help=spec.help)
    elif spec.kind == "floats":
        value = st.text_input(label, key=key, help=spec.help, placeholder="empty: the training set's own")
    elif spec.kind == "int":
        value = st.slider(label, int(spec.low), int(spec.high), step=int(spec.step or 1), key=key, help=spec.help)
    else:
        value = st.slider(label, float(spec.low), float(spec.high), step=float(spec.step), key=key, help=spec.help)
    return _from_widget(name, param, spec, value)


def _editor() -> list[dict]:
    st.multiselect("Transforms, applied in the order picked", list(TRANSFORMS), key=NAMES_KEY, wrap=True,
                   help="Remove a transform and pick it again to move it to the end.")
    steps = []
    for index, name in enumerate(st.session_state[NAMES_KEY]):
        with st.expander(f"{index}. {name}"):
            st.caption(TRANSFORMS[name].help)
            steps.append({"name": name, "params": {p: _widget(name, p, s) for p, s in TRANSFORMS[name].params.items()}})
    buttons = st.container(horizontal=True)
    default = lab.pipeline_summary(augment.default_pipeline())
    buttons.button("Default", on_click=_load, args=(augment.default_pipeline(),), key="augment.reset",
                   icon=":material/restart_alt:", help=f"Back to the default pipeline: {default}.")
    buttons.button("Clear", on_click=_load, args=([],), key="augment.clear", icon=":material/clear_all:",
                   help="Remove every transform (no augmentation).")
    with st.expander("Import a pipeline (JSON)"):
        st.text_area("Pipeline JSON", key="augment.json_in",
                     placeholder='[{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]')
        st.button("Load it", on_click=_import_json, key="augment.import")
        if st.session_state.get("augment.import_error"):
            show_error(as_plain_markdown(st.session_state["augment.import_error"]),
                       "Fix the JSON; the editor keeps your current pipeline.")
    return steps


st.title("Augment")
st.caption("Build the training pipeline from torchvision's transforms and see what it does to real faces.")
root = data_root()
try:
    train = load_split(root, "train")
    mean, std = channel_stats(root)
except ValueError as error:
    show_error(f"The data set {as_plain_markdown(root.name)} cannot be loaded: {as_plain_markdown(str(error))}",
               "Pick another data set in the sidebar, or run `python -m lib data-check` on its folder "
               f"({as_plain_markdown(str(root))}) to see what is wrong.")
    st.stop()
height, width = train.image_size
report = check_dataset(root)  # cached in lib until a file of the data set changes
count = len(report.errors)
problems = f" The data check found **{count} problem{'s' * (count != 1)}** (tab Data check)." if count else ""
st.caption(f"Data set **{as_plain_markdown(root.name)}**: {len(train.classes)} identities, "
           f"{len(train):,} training images of {height}x{width} pixels. Pick another data set in the "
           f"sidebar.{problems}")
if NAMES_KEY not in st.session_state:
    _load(st.session_state.get(DRAFT_KEY) or st.session_state.get(PIPELINE_KEY) or augment.default_pipeline())

left, right = st.columns([1.15, 2], gap="medium")
with left:
    st.subheader("Pipeline")
    try:
        steps = augment.validate_pipeline(_editor())
        augment.check_runs(steps, (height, width))
        st.session_state[DRAFT_KEY], valid = steps, True
    except ValueError as error:
        show_error(f"This pipeline cannot run: {as_plain_markdown(str(error))}",
                   "Change the setting named above; the previews show the last pipeline that worked until then.")
        steps, valid = st.session_state.get(DRAFT_KEY) or [], False
    if st.button("Use this pipeline for training", type="primary", key="augment.handoff", disabled=not valid):
        st.session_state[PIPELINE_KEY] = steps
    save_user_choices()  # the draft and the pipeline survive a browser refresh
    if st.session_state.get(PIPELINE_KEY) == steps:
        st.success(f"Training will use: {lab.pipeline_summary(steps)}. Open **Train** to launch a job.")
    with st.expander("Export"):
        code = advice.pipeline_code(steps, (height, width), mean, std)
        st.download_button("Pipeline JSON", augment.pipeline_to_json(steps), "pipeline.json", key="augment.dl_json")
        st.download_button("Python code", code, "transforms.py", key="augment.dl_code")
        st.code(code, language="python")

with right:
    controls = st.columns(4)
    pick = controls[0].radio("Pick images", ["random", "one identity"], key="augment.pick")
    identity = None
    if pick == "one identity":
        identity = controls[0].selectbox("Identity", train.classes, key="augment.identity")
    count = controls[1].slider("Number of images", 1, 8, 4, key="augment.count")
    samples = controls[2].slider("Samples per image", 1, 8, 5, key="augment.samples")
    seed = int(controls[3].number_input("Seed", 0, 10**6, 0, key="augment.seed",
                                        help="Same seed, same pictures; change it for new random samples."))
    picked = lab.pick_images(train, count, seed, identity)
    names = [train.classes[int(train.labels[i])] for i in picked]
    shown_names = [as_plain_markdown(name) for name in names]  # for captions, which are markdown
    for warning in advice.pipeline_warnings(steps, (height, width)):
        st.warning(str(warning), icon=":material/school:")
    tabs = st.tabs(["Preview", "Step by step", "MixUp / CutMix", "Normalize", "Data check"])

with tabs[0]:
    grid = lab.with_originals(train.images[picked], lab.preview(train.images[picked], steps, samples, seed))
    st.image(lab.tile(grid, scale=2), caption=f"Rows: {', '.join(shown_names)}. First column: the original; "
             f"then {samples} samples of the pipeline (seed {seed}).")
    per = sorted(int((train.labels == c).sum()) for c in range(len(train.classes)))
    st.info(f"**Why augment.** With only {per[len(per) // 2]} training images for a typical identity here, a "
            "network can memorise every picture: training accuracy reaches 100% while dev accuracy stalls. Random "
            "versions of each face every epoch force it to learn what stays constant, the identity. Helpful for faces: "
            "horizontal flip, mild crops and shifts, small rotations or perspective (head pose), mild colour jitter, "
            "moderate RandAugment. Harmful: vertical flips, crops that cut out the eyes, strong hue shifts (the "
            "warnings above explain each).", icon=":material/lightbulb:")

with tabs[1]:
    row = st.selectbox("Image", range(len(picked)), format_func=lambda i: f"row {i + 1}: {names[i]}", key="augment.row")
    trace = augment.trace_steps(train.images[picked[row]], steps, seed, (mean, std), image_index=row)
    st.image([lab.to_hwc(augment.to_display(image), 2) for _, image in trace], caption=[t for t, _ in trace], width=128)
    st.caption("Each picture is the previous one after one more step; the last equals the first sample of "
               "this row in the preview. A float image after Normalize is stretched to 0..255 to be shown.")

with tabs[2]:
    kind = st.radio("Batch mixing", list(BATCH_MIXES), format_func=lambda k: BATCH_MIXES[k].title,
                    horizontal=True, index=1, key="augment.mix")
    alpha = st.slider("alpha", 0.05, 10.0, BATCH_MIXES[kind].alpha.default, 0.05, key=f"augment.alpha.{kind}",
                      disabled=kind == "none", help=BATCH_MIXES[kind].alpha.help)
    first, second = picked[0], picked[1 % len(picked)]
    mixes = [augment.mix_preview(train.images[first], train.images[second], kind, alpha, seed + k) for k in range(5)]
    shown = [train.images[first], train.images[second]] + [mixed for mixed, _, _ in mixes]
    st.image([lab.to_hwc(image, 2) for image in shown], width=128,
             caption=[f"A: {shown_names[0]}", f"B: {shown_names[1 % len(names)]}"]
             + [f"{a:.2f} A + {b:.2f} B" for _, a, b in mixes])
    st.caption("Five draws (seeds from the seed above): each caption is the soft label the loss is given.")
    st.info(f"**{BATCH_MIXES[kind].title}.** {BATCH_MIXES[kind].help} MixUp: x = λ·A + (1−λ)·B with target "
            "λ·onehot(A) + (1−λ)·onehot(B), λ ~ Beta(α, α): a small α (0.2) keeps most λ near 0 or 1, α = 1 spreads "
            "them evenly. CutMix pastes a box of B into A and weighs the labels by area. Both keep the network from "
            "being 100% sure; they act on whole batches in training (choose them on the Train page). Soft labels suit "
            "cross-entropy, not ArcFace, CosFace or SphereFace, whose margins need one true class.",
            icon=":material/lightbulb:")

with tabs[3]:
    summary = lab.normalization_summary(train.images[picked], mean, std)
    st.dataframe({"channel": ["R", "G", "B"], "training-set mean": mean, "training-set std": std,
                  "these images: mean before": summary["before_mean"], "mean after": summary["after_mean"],
                  "std after": summary["after_std"]}, hide_index=True)
    st.caption("Over the whole training set the means after Normalize are 0 and the stds 1 by construction; "
               "a few images only come close.")
    st.info("**Normalize with the data set's own statistics.** After ToDtype scales pixels to [0, 1], Normalize "
            "subtracts each channel's training-set mean and divides by its std, so inputs are centred near 0 with "
            "a spread near 1. The first layer then sees balanced inputs and the optimiser's steps suit every "
            "channel. Use the training set's numbers (not ImageNet's) and the same ones for dev and verification "
            "images; Train adds this step automatically.", icon=":material/lightbulb:")

with tabs[4]:
    metrics = st.columns(6)
    for column, (label, value) in zip(metrics, [("identities", report.classes), ("train", report.train_images),
                                                ("dev", report.dev_images), ("verification", report.ver_images),
                                                ("pairs", report.pairs), ("same person", report.same_pairs)]):
        column.metric(label, f"{value:,}")
    per_identity, sizes = report.images_per_class, ", ".join(f"{k} ({v:,})" for k, v in report.image_sizes.items())
    if per_identity:
        st.caption(f"Training images per identity: min {per_identity['min']}, median {per_identity['median']:g}, "
                   f"max {per_identity['max']}. Image sizes: {sizes}. Same check on the command line: "
                   f"`python -m lib data-check` on {as_plain_markdown(str(root))}.")
    for message in report.errors:
        (st.error if message in report.fatal else st.warning)(as_plain_markdown(message))
    st.markdown("**How many training images each identity has**")
    st.plotly_chart(px.histogram(x=list(report.train_counts.values()), nbins=40, height=260,
                                 labels={"x": "training images per identity"}).update_layout(
        yaxis_title="identities", margin=dict(t=10, b=10)), key="augment.hist")
    try:
        pairs = load_pairs(root)
        for label, indices in lab.sample_pairs(pairs, 4, seed).items():
            st.markdown("**Same person**" if label == 1 else "**Different people**")
            st.image([lab.tile(pairs.images[pairs.pairs[p]].unsqueeze(0), scale=2) for p in indices], width=260,
                     caption=[" vs ".join(as_plain_markdown(Path(pairs.paths[int(i)]).stem) for i in pairs.pairs[p])
                              for p in indices])
    except ValueError as error:
        show_error(f"No verification pairs to show: {error}", "See the problems listed above.")
