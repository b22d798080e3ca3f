"""Geometry and figures of the Margins page: target logits against the angle,
the decision regions of two classes on the unit circle, and the margin toy.

The target logit functions come from lib.losses.margins.target_logit (the same code the
losses train with); this module only evaluates and draws them. SphereFace's target logit is
blended with the plain cosine by an annealed lambda; its value at a chosen lambda is computed
by the loss's own head (SphereFaceHead.margin) and the schedule by its own function
(sphereface_lambda), so the page draws what training optimises.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from lib.losses.margins import SphereFaceHead, sphereface_lambda, target_logit
from lib.losses.registry import LOSSES

CURVES = ("softmax", "sphereface", "cosface", "arcface")
CURVE_TITLES = {"softmax": "Softmax (normalized): s cos(theta)",
                "sphereface": "SphereFace: s (λ cos(theta) + psi(m theta)) / (1 + λ)",
                "cosface": "CosFace: s (cos(theta) - m)", "arcface": "ArcFace: s cos(theta + m)"}
COLORS = {"softmax": "#636efa", "sphereface": "#ab63fa", "cosface": "#00cc96", "arcface": "#ef553b",
          "ce": "#636efa", "center": "#ffa15a", "triplet": "#19d3f3"}
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")


# The training schedule of lambda: the registry's defaults (what a run gets unless it sets them).
LAMBDA_SCHEDULE = {name: LOSSES["sphereface"].params[name].default
                   for name in ("lambda_base", "lambda_gamma", "lambda_power", "lambda_min")}
# A short run: 6 epochs of the embedded LFW-64 training set at batch 64 (43 steps an epoch), the
# length of the SphereFace demo recipe. Long runs reach lambda_min; short ones stop well above it.
SHORT_RUN_STEPS = 258


def sphereface_target(theta, s: float, m: int, lam: float) -> np.ndarray:
    """SphereFace's target logit s (lambda cos + psi) / (1 + lambda) at angles ``theta`` (radians),
    computed by the loss's head with lambda held at ``lam`` (lambda = 0: the pure psi margin)."""
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"lambda: choose a number >= 0, got {lam}")
    head = SphereFaceHead(2, 2, s=s, m=m, lambda_base=lam, lambda_gamma=0.0, lambda_min=0.0)
    cos = torch.cos(torch.as_tensor(np.asarray(theta, dtype=np.float64)))
    with torch.no_grad():
        return s * head.margin(cos).numpy()


def lambda_at(steps, schedule: dict | None = None) -> np.ndarray:
    """lambda after each number of training steps, by the loss's schedule (default: the registry's)."""
    params = {**LAMBDA_SCHEDULE, **(schedule or {})}
    return np.array([sphereface_lambda(int(step), params["lambda_base"], params["lambda_gamma"],
                                       params["lambda_power"], params["lambda_min"]) for step in np.ravel(steps)])


def steps_to_lambda_min(schedule: dict | None = None) -> int | None:
    """The first step at which lambda reaches lambda_min (None if it never decays)."""
    params = {**LAMBDA_SCHEDULE, **(schedule or {})}
    base, gamma, power, low = (params[k] for k in ("lambda_base", "lambda_gamma", "lambda_power", "lambda_min"))
    if base <= low:
        return 0
    if gamma <= 0 or power <= 0 or low <= 0:
        return None
    step = math.ceil(((base / low) ** (1 / power) - 1) / gamma - 1e-9)
    return step if lambda_at([step], params)[0] <= low else step + 1


def lambda_marks(schedule: dict | None = None, short_run: int = SHORT_RUN_STEPS) -> dict[float, str]:
    """The schedule's landmarks as lambda -> a short tag (it fits beside a slider's value): the start,
    the value after a short run, the floor."""
    params = {**LAMBDA_SCHEDULE, **(schedule or {})}
    short = float(lambda_at([short_run], params)[0])
    return {float(params["lambda_base"]): "start", round(short, 1): f"{short_run} steps",
            float(params["lambda_min"]): "end"}


def schedule_sentence(schedule: dict | None = None, short_run: int = SHORT_RUN_STEPS) -> str:
    """The schedule's landmarks in words, for the caption under the lambda control."""
    params = {**LAMBDA_SCHEDULE, **(schedule or {})}
    end_step = steps_to_lambda_min(params)
    short = float(lambda_at([short_run], params)[0])
    end = f"and {params['lambda_min']:g} from step {end_step:,} on" if end_step is not None else \
          f"never below {params['lambda_min']:g}"
    return (f"Training's default schedule, lambda = max({params['lambda_min']:g}, {params['lambda_base']:g} / "
            f"(1 + {params['lambda_gamma']:g} t)): {params['lambda_base']:g} at step 0, {short:.1f} after "
            f"{short_run} steps (a short run: 6 epochs of LFW-64), {end}.")


def lambda_options(schedule: dict | None = None) -> list[float]:
    """Values for the lambda control: the landmarks, 0 (the pure margin) and a few between."""
    return sorted({0.0, 1.0, 2.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, *lambda_marks(schedule)})


def logit_curves(s: float, margins: dict[str, float], points: int = 361,
                 sphere_lambda: float = 0.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (theta in degrees, target logit) for softmax and each margin in ``margins``
    (SphereFace at ``sphere_lambda``)."""
    theta = np.linspace(0.0, math.pi, points)
    curves = {"softmax": (np.degrees(theta), target_logit("softmax", theta, s, 0.0))}
    for name in CURVES[1:]:
        if name == "sphereface" and name in margins:
            curves[name] = (np.degrees(theta), sphereface_target(theta, s, int(margins[name]), sphere_lambda))
        elif name in margins:
            curves[name] = (np.degrees(theta), target_logit(name, theta, s, margins[name]))
    return curves


def _wrap_deg(angle: np.ndarray) -> np.ndarray:
    return (angle + 180.0) % 360.0 - 180.0


def two_class_regions(name: str, s: float, m: float, separation_deg: float, points: int = 1441,
                      sphere_lambda: float = 0.0) -> dict:
    """Where a feature on the unit circle counts as class 1, class 2, or neither.

    The class weights W1, W2 sit at +separation/2 and -separation/2 degrees. A feature at angle
    alpha is class 1 when class 1 wins *with its margin applied*,
    target_logit(theta1) > s cos(theta2), and likewise for class 2; with a margin some angles
    satisfy neither: the margin zone, which no training feature may occupy.
    Returns alpha (deg), region (1, 2 or 0), and the margin zone's width on the short arc
    between W1 and W2 (degrees).
    """
    if not 0 < separation_deg <= 180:
        raise ValueError(f"separation_deg: choose an angle in (0, 180], got {separation_deg}")
    alpha = np.linspace(-180.0, 180.0, points)
    theta1 = np.radians(np.abs(_wrap_deg(alpha - separation_deg / 2)))
    theta2 = np.radians(np.abs(_wrap_deg(alpha + separation_deg / 2)))
    margin = 0.0 if name == "softmax" else m

    def target(theta):
        if name == "sphereface":
            return sphereface_target(theta, s, int(margin), sphere_lambda)
        return target_logit(name, theta, s, margin)

    # ">=": on softmax's bisector the two scores tie exactly; that line has no width.
    win1 = target(theta1) >= s * np.cos(theta2)
    win2 = target(theta2) >= s * np.cos(theta1)
    region = np.where(win1, 1, np.where(win2, 2, 0))
    between = np.abs(alpha) <= separation_deg / 2
    step = alpha[1] - alpha[0]
    zone = float(np.count_nonzero((region == 0) & between) * step)
    return {"alpha": alpha, "region": region, "zone_deg": zone}


def expected_zone_deg(name: str, m: float, separation_deg: float) -> float:
    """Width of the margin zone between two classes by hand (theta1 + theta2 = separation):
    softmax 0; SphereFace cos(m t) = cos(sep - t) -> t = sep/(m+1), zone sep (m-1)/(m+1);
    ArcFace t + m = sep - t -> zone m (in degrees); CosFace cos t - m = cos(sep - t)."""
    sep = math.radians(separation_deg)
    if name == "softmax":
        return 0.0
    if name == "sphereface":
        return separation_deg * (m - 1) / (m + 1)
    if name == "arcface":
        return min(math.degrees(m), separation_deg)
    # CosFace: cos t - cos(sep - t) = m  <=>  -2 sin(sep/2) sin(t - sep/2) = m, the boundary is
    # t = sep/2 - asin(m / (2 sin(sep/2))) on each side.
    ratio = m / (2 * math.sin(sep / 2))
    return separation_deg if ratio >= 1 else 2 * math.degrees(math.asin(ratio))


def logit_figure(curves: dict, s: float) -> go.Figure:
    fig = go.Figure()
    for name, (theta, logit) in curves.items():
        dash = "dot" if name == "softmax" else "solid"
        fig.add_trace(go.Scatter(x=theta, y=logit, name=CURVE_TITLES[name], mode="lines",
                                 line={"color": COLORS[name], "dash": dash, "width": 3}))
    fig.add_hline(y=0, line={"color": "#bbbbbb", "width": 1})
    fig.update_layout(height=400, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis_title="angle theta to the class weight (degrees)",
                      yaxis_title=f"target logit (s = {s:g})", legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(range=[0, 180], dtick=30)
    return fig


def regions_figure(regions: dict, separation_deg: float, title: str) -> go.Figure:
    """The unit circle colored by region, with the two class weights as arrows."""
    alpha = np.radians(regions["alpha"])
    fig = go.Figure()
    styles = {1: ("class 1 wins", CLASS_COLORS[0]), 2: ("class 2 wins", CLASS_COLORS[1]),
              0: ("margin zone: neither", "#bbbbbb")}
    for value, (label, color) in styles.items():
        mask = regions["region"] == value
        fig.add_trace(go.Scatter(x=np.where(mask, np.cos(alpha), None), y=np.where(mask, np.sin(alpha), None),
                                 mode="lines", line={"color": color, "width": 9}, name=label,
                                 connectgaps=False, hoverinfo="skip"))
    for index, sign in enumerate((1, -1)):
        angle = math.radians(sign * separation_deg / 2)
        fig.add_annotation(x=math.cos(angle) * 0.8, y=math.sin(angle) * 0.8, ax=0, ay=0, xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=3, arrowwidth=3,
                           arrowcolor=CLASS_COLORS[index], text="")
        # Beside the arrow, 25 degrees further out from the bisector, so the name never sits on the shaft.
        beside = angle + math.radians(25) * sign
        fig.add_annotation(x=math.cos(beside) * 0.6, y=math.sin(beside) * 0.6, showarrow=False,
                           text=f"<b>W{index + 1}</b>", font={"size": 14, "color": CLASS_COLORS[index]})
    _square(fig, 1.25, title, height=340)
    return fig


def _square(fig: go.Figure, extent: float, title: str, height: int) -> None:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=title,
                      legend={"orientation": "h", "y": -0.05}, plot_bgcolor="white")
    fig.update_xaxes(range=[-extent, extent], visible=False)
    fig.update_yaxes(range=[-extent, extent], visible=False, scaleanchor="x", scaleratio=1)


def toy_figure(runs: list, names: list[str], titles: list[str]) -> go.Figure:
    """Two rows per run: the raw 2-D features (train dots, held-out crosses, class weight
    directions as lines) and the same features normalized onto the unit circle."""
    fig = make_subplots(rows=2, cols=len(runs), subplot_titles=titles + [""] * len(runs),
                        vertical_spacing=0.06, horizontal_spacing=0.03)
    for col, run in enumerate(runs, start=1):
        extent = float(np.percentile(np.abs(run.features), 99)) * 1.1 or 1.0
        for c, name in enumerate(names):
            color = CLASS_COLORS[c % len(CLASS_COLORS)]
            _toy_points(fig, run, c, name, color, col, extent, first=col == 1)
        for c, direction in enumerate(run.directions):
            color = CLASS_COLORS[c % len(CLASS_COLORS)]
            fig.add_trace(go.Scatter(x=[0, direction[0] * extent], y=[0, direction[1] * extent], mode="lines",
                                     line={"color": color, "width": 1, "dash": "dash"}, showlegend=False,
                                     hoverinfo="skip"), row=1, col=col)
        theta = np.linspace(0, 2 * math.pi, 200)
        fig.add_trace(go.Scatter(x=np.cos(theta), y=np.sin(theta), mode="lines", showlegend=False,
                                 line={"color": "#dddddd", "width": 1}, hoverinfo="skip"), row=2, col=col)
        for row, limit in ((1, extent), (2, 1.45)):
            fig.update_xaxes(range=[-limit, limit], showticklabels=False, row=row, col=col)
            fig.update_yaxes(range=[-limit, limit], showticklabels=False, scaleanchor=f"x{_axis(row, col, len(runs))}",
                             row=row, col=col)
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10}, plot_bgcolor="white",
                      legend={"orientation": "h", "y": -0.04})
    return fig


def _axis(row: int, col: int, cols: int) -> str:
    index = (row - 1) * cols + col
    return "" if index == 1 else str(index)


def _toy_points(fig, run, c, name, color, col, extent, first) -> None:
    train = run.features[run.labels == c]
    dev = run.dev_features[run.dev_labels == c]
    label = name.replace("_", " ")
    fig.add_trace(go.Scatter(x=train[:, 0], y=train[:, 1], mode="markers", marker={"color": color, "size": 5},
                             name=label, legendgroup=label, showlegend=first, hovertext=label), row=1, col=col)
    fig.add_trace(go.Scatter(x=dev[:, 0], y=dev[:, 1], mode="markers", legendgroup=label, showlegend=False,
                             marker={"color": color, "size": 7, "symbol": "x-thin", "line": {"width": 2, "color": color}},
                             hovertext=f"{label} (held out)"), row=1, col=col)
    # On the circle each class gets its own radius band so overlapping classes stay visible.
    unit = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-9)
    radius = 1.0 + 0.04 * c
    fig.add_trace(go.Scatter(x=unit[:, 0] * radius, y=unit[:, 1] * radius, mode="markers",
                             marker={"color": color, "size": 5}, legendgroup=label, showlegend=False,
                             hovertext=label), row=2, col=col)
