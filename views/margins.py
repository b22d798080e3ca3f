"""Margins: softmax vs SphereFace vs CosFace vs ArcFace, as curves, as regions on the
unit circle, and as a toy network with 2-D features that trains live."""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from lib.explore import margin_toy
from lib.explore import margins as geo
from lib.losses.registry import LOSSES
from lib.ui.text import as_plain_html, as_plain_markdown
from views.common import data_root, show_error
from views.explore_ui import show_lesson


def _short_title(loss: str) -> str:
    """"CosFace (additive cosine margin)" -> "CosFace": short enough for a tag and a table row."""
    return LOSSES[loss].title.split(" (")[0]


st.title("Margins: why ArcFace, CosFace and SphereFace")
st.markdown(
    "Margin losses normalize the embedding **and** the class weights, so a class score is "
    "`s * cos(theta)`: only the **angle theta** between a face's feature and its class weight counts. "
    "During training a **margin** makes the true class's score harder to win, which forces features "
    "into tighter cones than plain softmax needs. That is what makes them good for verification.")

# ----------------------------------------------------------------- target logit curves
st.header("1. The target logit against the angle")
controls, plot, notes = st.columns([1, 2.2, 1.3])
with controls:
    scale = st.slider("Scale s", 1.0, 64.0, 30.0, 1.0, key="margins.s",
                      help="Cosines lie in [-1, 1]; s stretches them so the softmax can become confident.")
    sphere_m = st.select_slider("SphereFace m", [1, 2, 3, 4], 4, key="margins.sphere_m")
    marks = geo.lambda_marks()
    sphere_lambda = st.select_slider(
        "SphereFace lambda", geo.lambda_options(), geo.LAMBDA_SCHEDULE["lambda_min"], key="margins.sphere_lambda",
        format_func=lambda value: f"{value:g}" + (f" ({marks[value]})" if value in marks else ""),
        help="SphereFace blends its margin with the plain cosine: (lambda cos + psi) / (1 + lambda). Training "
             "starts with a large lambda (almost plain softmax) and lowers it every step; 0 is the pure margin.")
    st.caption(geo.schedule_sentence())
    cos_m = st.slider("CosFace m (cosine)", 0.0, 0.6, 0.35, 0.05, key="margins.cos_m")
    arc_m = st.slider("ArcFace m (radians)", 0.0, 1.0, 0.5, 0.05, key="margins.arc_m")
    st.caption(f"ArcFace m = {arc_m:.2f} rad = **{math.degrees(arc_m):.1f} degrees**")
margins = {"sphereface": sphere_m, "cosface": cos_m, "arcface": arc_m}
with plot:
    st.markdown("**A margin lowers the true class's logit, so training must shrink theta to win.**")
    st.plotly_chart(geo.logit_figure(geo.logit_curves(scale, margins, sphere_lambda=sphere_lambda), scale),
                    key="margins.curves")
with notes:
    for number in (28, 29, 30):
        show_lesson(number, expanded=False)
    st.caption("Dotted: softmax, which is also every *other* class's logit. The gap between the dotted "
               "curve and a margin curve is the handicap the true class must overcome.")

# ----------------------------------------------------------------- two classes on the unit circle
st.header("2. Two classes on the unit circle")
st.markdown("Two class weights W1 and W2, some angle apart. A feature on the circle belongs to class 1 only "
            "if class 1 wins **with its margin**; the gray **margin zone** wins for neither, so training "
            "pushes every feature out of it. Softmax has no zone: the boundary is the bisector.")
separation = st.slider("Angle between W1 and W2 (degrees)", 10, 180, 90, 5, key="margins.separation")
columns = st.columns(4)
for column, name in zip(columns, geo.CURVES):
    m = 0.0 if name == "softmax" else margins[name]
    regions = geo.two_class_regions(name, scale, m, separation, sphere_lambda=sphere_lambda)
    with column:
        title = {"softmax": "Softmax", "sphereface": f"SphereFace m={sphere_m}, λ={sphere_lambda:g}",
                 "cosface": f"CosFace m={cos_m:.2f}", "arcface": f"ArcFace m={arc_m:.2f}"}[name]
        st.plotly_chart(geo.regions_figure(regions, separation, title), key=f"margins.regions.{name}")
        st.metric("Margin zone between the classes", f"{regions['zone_deg']:.1f} deg")
st.caption("Try it: widen the angle between W1 and W2. SphereFace's zone grows with it (multiplicative), "
           "ArcFace's stays m (additive in angle), CosFace's shrinks (additive in cosine). SphereFace is drawn "
           f"at the lambda chosen above: the pure margin (lambda 0) is the paper's picture, but training with "
           f"the default schedule never gets there; it ends at lambda {geo.LAMBDA_SCHEDULE['lambda_min']:g}, a "
           "much narrower zone, and a short run stops higher still.")

# ----------------------------------------------------------------- live toy
st.header("3. A live toy: 2-D features, trained in seconds")
st.markdown("A small network maps each face of a few identities to a **2-D feature** and is trained with "
            "each loss. Top row: the raw features (dots: training images, crosses: held-out images of the "
            "same people, dashed: class weight directions). Bottom row: the same features on the unit "
            "circle (each identity on its own ring so overlaps stay visible).")


@st.cache_resource(show_spinner=False)
def _toy_data(root: str, identities: int):
    return margin_toy.toy_data(root, identities)


@st.cache_data(show_spinner=False, max_entries=64)
def _toy_run(root: str, identities: int, loss: str, params: tuple, steps: int, schedule: str):
    return margin_toy.train_toy(_toy_data(root, identities), loss, dict(params), steps, schedule)


with st.form("margins.toy_form"):
    left, right = st.columns(2)
    mode = left.radio("Compare", ["losses side by side", "schedules side by side", "SphereFace m = 1, 2, 3, 4"],
                      key="margins.toy_mode", horizontal=True,
                      help="schedules: the first loss chosen below, from scratch, joint and sequential.")
    schedule = left.radio("Schedule", margin_toy.SCHEDULES, index=2, key="margins.toy_schedule", horizontal=True,
                          help="sequential: cross-entropy for the first half, then the loss. joint: the loss "
                               f"plus {margin_toy.JOINT_WEIGHT:g} x a center term from the first step (the course's "
                               "joint training). In 2-D a margin from scratch often stalls with classes stuck.")
    identities = right.slider("Identities", 3, 8, 6, key="margins.toy_identities")
    steps = right.select_slider("Training steps", [100, 200, 300, 600, 1000], 300, key="margins.toy_steps")
    # The full width of the form: four loss tags stay readable side by side.
    losses = st.multiselect("Losses", margin_toy.TOY_LOSSES, ["ce", "sphereface", "cosface", "arcface"],
                            max_selections=4, key="margins.toy_losses", format_func=_short_title, width="stretch")
    st.form_submit_button("Train the toys", type="primary")

if mode.startswith("SphereFace"):
    # SphereFace's own lambda annealing is its warm start: from scratch
    jobs = [("sphereface", {"m": m}, f"SphereFace m={m}", "scratch") for m in (1, 2, 3, 4)]
    st.caption("SphereFace trains from scratch here: its lambda starts large (plain softmax) and decays, which is its "
               "own way of starting easy. Watch the spread within each class shrink as m grows.")
elif mode.startswith("schedules"):
    first = next((name for name in losses if name not in ("center", "triplet")), "arcface")
    jobs = [(first, {}, f"{_short_title(first)}, {way}", way) for way in margin_toy.SCHEDULES]
    st.caption(f"{_short_title(first)} three ways: from scratch, joint (the course's sense: "
               f"{1 - margin_toy.JOINT_WEIGHT:g} x the loss + {margin_toy.JOINT_WEIGHT:g} x a center term, together "
               "from the first step) and sequential (cross-entropy first, then the loss).")
else:
    # Center and triplet are CE plus a metric term already: no joint version of them.
    jobs = [(name, {}, _short_title(name), "scratch" if schedule == "joint" and name in ("center", "triplet")
             else schedule) for name in losses]
if not jobs:
    show_error("No loss chosen for the toy.", "Pick one to four losses above and press Train the toys.")
    st.stop()
try:
    with st.spinner("Training the toy networks..."):
        runs = [_toy_run(str(data_root()), identities, name, tuple(sorted(params.items())), steps, way)
                for name, params, _, way in jobs]
        names = _toy_data(str(data_root()), identities).names
except ValueError as err:
    show_error(f"The toy cannot train on this data set: {as_plain_markdown(str(err))}",
               "Pick a data set with at least 3 identities in the sidebar.")
    st.stop()
# Identity names are folder names, and plotly renders HTML in legends and hover text.
st.plotly_chart(geo.toy_figure(runs, [as_plain_html(name) for name in names], [title for _, _, title, _ in jobs]),
                key="margins.toy_figure")
table = pd.DataFrame({
    "loss": [title for _, _, title, _ in jobs],
    "train acc.": [f"{r.train_acc:.0%}" for r in runs],
    "held-out acc.": [f"{r.dev_acc:.0%}" for r in runs],
    "spread (deg)": [round(r.intra_angle_deg, 1) for r in runs],
    "gap (deg)": [round(r.min_gap_deg, 1) for r in runs],
    "time (s)": [round(r.seconds, 2) for r in runs],
})
st.dataframe(table, hide_index=True, key="margins.toy_table", width="stretch")
st.caption("Held-out: other images of the same people. Spread: mean angle between a training feature and its "
           "class's mean direction (small = compact). Gap: the emptiest angle between two neighbouring classes' "
           "sectors (negative = they overlap).")
show_lesson(24)
for number in (26, 27, 31):
    show_lesson(number, expanded=False)
