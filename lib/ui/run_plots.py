"""Plotly figures of training runs: one run's curves, several runs overlaid, and
accuracy against compute. Pure functions of the metrics rows (lib.ui.runs)."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.explore.margins import LAMBDA_SCHEDULE, lambda_at
from lib.ui.runs import CURVES

# (panel title, [(metric, legend name, dashed)]) — training and validation share a panel,
# so the gap between them is visible at a glance.
PANELS = (
    ("Loss (training)", [("train_loss", "training loss", False)]),
    ("Accuracy: training vs dev", [("train_acc", "training accuracy", True), ("dev_top1", "dev top-1", False),
                                   ("dev_top5", "dev top-5", False)]),
    ("Verification on unseen faces", [("auc", "ROC AUC", False), ("eer", "EER", True)]),
    ("Learning rate", [("lr", "learning rate", False)]),
)


# Shares and rates: a y axis that never leaves [0, 1] (plotly pads a single point by +-0.5 or more).
UNIT_METRICS = frozenset({"train_acc", "dev_top1", "dev_top5", "auc", "eer"})


def y_range(values: list[float], share: bool) -> list[float] | None:
    """A readable y range for ``values``: inside [0, 1] for a ``share`` (tight around the values with
    some room, never outside), from 0 for a non-negative quantity (loss, learning rate, speed);
    None (plotly's own) for anything else or no values."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    if share and 0 <= low and high <= 1:
        pad = max(0.05, (high - low) * 0.15)
        return [max(0.0, low - pad), min(1.0, high + pad)]
    if low >= 0:
        return [0.0, high * 1.15 if high > 0 else 1.0]
    return None


def _x_range(rows: list[dict]) -> dict:
    """Whole epochs on the axis of a short run, with half an epoch of room at each end, so a run of
    one epoch is a dot in the middle of its chart instead of at the edge of a 0..2 axis."""
    epochs = [row["epoch"] for row in rows if isinstance(row.get("epoch"), (int, float))]
    if not epochs or max(epochs) > 20:
        return {}
    return {"dtick": 1, "range": [min(epochs) - 0.5, max(epochs) + 0.5]}


def _marker(xs: list) -> dict:
    return {"size": 10 if len(xs) == 1 else 6}


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(row.get("epoch"), row.get(key)) for row in rows
              if isinstance(row.get(key), (int, float)) and row.get("epoch") is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _mode(xs: list) -> str:
    """Markers show single epochs of short runs; on long runs they only clutter the line."""
    return "lines+markers" if len(xs) <= 30 else "lines"


def run_curves(rows: list[dict]) -> go.Figure:
    """Four panels of one run, per epoch."""
    # Room between the rows: the lower panels' titles sit clear of the upper panels' "epoch" axis titles.
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in PANELS],
                           horizontal_spacing=0.1, vertical_spacing=0.26)
    for index, (_, lines) in enumerate(PANELS):
        row, col = divmod(index, 2)
        panel_values, keys = [], set()
        for key, name, dashed in lines:
            xs, ys = _series(rows, key)
            if xs:
                figure.add_trace(go.Scatter(x=xs, y=ys, name=name, mode=_mode(xs), marker=_marker(xs),
                                            line={"dash": "dot" if dashed else "solid"}),
                                 row=row + 1, col=col + 1)
                panel_values += ys
                keys.add(key)
        figure.update_yaxes(range=y_range(panel_values, share=bool(keys) and keys <= UNIT_METRICS),
                            row=row + 1, col=col + 1)
    figure.update_xaxes(title_text="epoch", **_x_range(rows))
    figure.update_layout(height=640, margin={"t": 40, "b": 20, "l": 10, "r": 10},
                         legend={"orientation": "h", "y": -0.16})
    return figure


def smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, ``weight`` of the last value kept at
    each step (0: raw values, 0.99: very smooth), debiased so the curve starts at the first value
    instead of rising from 0."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing: {weight} is not in [0, 1); use 0 for the raw values, 0.6 for a calm curve")
    smoothed, last = [], 0.0
    for count, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        smoothed.append(last / (1 - weight ** count))
    return np.asarray(smoothed, dtype=float)


# (panel title, smoothed step series [(key, name, color)], per-epoch series [(key, name, color, dashed)])
STEP_PANELS = (
    ("Loss (training)", [("loss", "training loss", "#636efa")], []),
    ("Accuracy: training vs dev", [("acc", "training accuracy", "#ef553b")],
     [("dev_top1", "dev top-1", "#00cc96", False), ("dev_top5", "dev top-5", "#ab63fa", False)]),
    ("Verification on unseen faces", [], [("auc", "ROC AUC", "#19d3f3", False), ("eer", "EER", "#ff6692", True)]),
    ("Learning rate", [], []),
)


def _step_series(steps: list[dict], key: str) -> tuple[list, list]:
    points = [(row["step"], row[key]) for row in steps
              if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _epoch_series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(row["step"], row[key]) for row in rows if isinstance(row.get("step"), (int, float))
              and isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _add_smoothed(figure: go.Figure, steps: list[dict], key: str, name: str, color: str, smoothing: float,
                  cell: dict) -> list[float]:
    """The raw values faint behind, the smoothed curve on top; returns the raw values (for the range)."""
    xs, ys = _step_series(steps, key)
    if not xs:
        return []
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color, "width": 1}, opacity=0.25,
                                showlegend=False, hoverinfo="skip", name=f"{name} (raw)"), **cell)
    figure.add_trace(go.Scatter(x=xs, y=smooth(ys, smoothing).tolist(), mode="lines", name=name,
                                line={"color": color, "width": 2}), **cell)
    return ys


MAX_EPOCH_LINES = 60  # more would grey the panels out: a long run marks every few epochs


def _epoch_lines(rows: list[dict]) -> list[dict]:
    """A dotted vertical line in each of the four panels where an epoch ended (every few epochs
    on a long run), built at once: plotly's add_vline revalidates every shape at each call."""
    ends = sorted({row["step"] for row in rows if isinstance(row.get("step"), (int, float))})
    ends = ends[::math.ceil(len(ends) / MAX_EPOCH_LINES)] if ends else []
    line = {"dash": "dot", "color": "gray", "width": 1}
    return [{"type": "line", "x0": end, "x1": end, "xref": f"x{axis}", "y0": 0, "y1": 1,
             "yref": f"y{axis} domain", "line": line, "opacity": 0.5}
            for axis in ("", "2", "3", "4") for end in ends]


def step_curves(steps: list[dict], rows: list[dict], smoothing: float = 0.6) -> go.Figure:
    """Four panels of one run against the training step: the training curves of steps.jsonl
    (smoothed, raw faint behind), dev and verification metrics at the step each epoch ended,
    and a dotted line at the end of every epoch."""
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _, _ in STEP_PANELS],
                           horizontal_spacing=0.1, vertical_spacing=0.26)
    for index, (_, smoothed, per_epoch) in enumerate(STEP_PANELS):
        cell = dict(zip(("row", "col"), (value + 1 for value in divmod(index, 2))))
        values, keys = [], set()
        for key, name, color in smoothed:
            values += _add_smoothed(figure, steps, key, name, color, smoothing, cell)
            keys.add(key)
        for key, name, color, dashed in per_epoch:
            xs, ys = _epoch_series(rows, key)
            if xs:
                figure.add_trace(go.Scatter(x=xs, y=ys, name=name, mode=_mode(xs), marker=_marker(xs),
                                            line={"color": color, "dash": "dot" if dashed else "solid"}), **cell)
                values += ys
                keys.add(key)
        figure.update_yaxes(range=y_range(values, share=bool(keys) and keys <= UNIT_METRICS | {"acc"}), **cell)
    xs, ys = _step_series(steps, "lr")
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="learning rate", line={"color": "#ffa15a"}),
                     row=2, col=2)
    figure.update_yaxes(range=y_range(ys, share=False), row=2, col=2)
    figure.update_layout(shapes=_epoch_lines(rows))
    last = max([row["step"] for row in steps] + [row["step"] for row in rows if isinstance(row.get("step"), int)] + [1])
    figure.update_xaxes(title_text="training step (dotted: end of an epoch)", range=[0, last * 1.02])
    figure.update_layout(height=640, margin={"t": 40, "b": 20, "l": 10, "r": 10},
                         legend={"orientation": "h", "y": -0.16})
    return figure


def overlay(runs: dict[str, list[dict]], key: str) -> go.Figure:
    """One metric of several runs on the same axes."""
    figure = go.Figure()
    values = []
    for label, rows in runs.items():
        xs, ys = _series(rows, key)
        figure.add_trace(go.Scatter(x=xs, y=ys, name=label, mode=_mode(xs), marker=_marker(xs)))
        values += ys
    figure.update_xaxes(**_x_range([row for rows in runs.values() for row in rows]))
    figure.update_yaxes(range=y_range(values, share=key in UNIT_METRICS))
    figure.update_layout(xaxis_title="epoch", yaxis_title=CURVES.get(key, key), height=380,
                         margin={"t": 20, "b": 10, "l": 10, "r": 10}, legend={"orientation": "h", "y": -0.25})
    return figure


def accuracy_vs_macs(rows: list[dict], key: str = "dev_top1") -> go.Figure:
    """Each run as a point: MACs per image (log scale) against a final metric."""
    points = [row for row in rows if isinstance(row.get("MACs"), (int, float)) and isinstance(row.get(key), (int, float))]
    figure = go.Figure(go.Scatter(
        x=[row["MACs"] for row in points], y=[row[key] for row in points], mode="markers+text",
        text=[row["run"] for row in points], textposition="top center", marker={"size": 12},
        customdata=[[row.get("params") or 0, row.get("loss", "?")] for row in points],
        hovertemplate="%{text}<br>MACs %{x:.3s}<br>params %{customdata[0]:.3s}<br>loss %{customdata[1]}"
                      "<br>" + CURVES.get(key, key) + " %{y:.3f}<extra></extra>"))
    figure.update_layout(xaxis_title="MACs per image (1 MAC = 2 FLOPs)", yaxis_title=CURVES.get(key, key),
                         xaxis_type="log", height=380, margin={"t": 20, "b": 10, "l": 10, "r": 10})
    xs = [row["MACs"] for row in points if row["MACs"] > 0]
    if xs:  # at least a factor of 4 in view, so near-equal models do not get a ruler of tiny ticks
        low, high = math.log10(min(xs)), math.log10(max(xs))
        pad = max(0.1, (0.6 - (high - low)) / 2)
        figure.update_xaxes(range=[low - pad, high + pad], tickformat=".3s")
    return figure


def sphereface_schedule(config: dict) -> dict | None:
    """The lambda schedule of a SphereFace run's train config (registry defaults where it sets none);
    None for another loss."""
    if config.get("loss") != "sphereface":
        return None
    params = config.get("loss_params") or {}
    return {key: float(params.get(key, default)) for key, default in LAMBDA_SCHEDULE.items()}


def lambda_figure(rows: list[dict], schedule: dict, total_steps: int | None = None) -> go.Figure:
    """SphereFace's lambda against the training step, computed from the run's schedule (the engine
    does not record it), with a dot where each finished epoch ended."""
    epoch_steps = [int(row["step"]) for row in rows if isinstance(row.get("step"), (int, float))]
    last = max([total_steps or 0, *epoch_steps, 1])
    steps = np.unique(np.linspace(0, last, min(last + 1, 400)).astype(int))
    figure = go.Figure(go.Scatter(x=steps, y=lambda_at(steps, schedule), mode="lines", name="lambda",
                                  line={"color": "#ab63fa"}))
    if epoch_steps:
        figure.add_trace(go.Scatter(x=epoch_steps, y=lambda_at(epoch_steps, schedule), mode="markers",
                                    name="end of an epoch", marker={"size": 9, "color": "#ab63fa"}))
    positive = schedule["lambda_min"] > 0 or schedule["lambda_base"] > 0  # a log axis needs lambda > 0
    figure.update_layout(xaxis_title="training step", yaxis_title="SphereFace lambda" + (" (log scale)" * positive),
                         yaxis_type="log" if positive else "linear", height=300, margin={"t": 20, "b": 10, "l": 10, "r": 10},
                         legend={"orientation": "h", "y": -0.3})
    figure.update_xaxes(range=[0, last])
    return figure
