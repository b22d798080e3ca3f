"""Plotly figures of training runs: one run's curves, several runs overlaid, and
accuracy against compute. Pure functions of the metrics rows (lib.ui.runs)."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(row.get("epoch"), row.get(key)) for row in rows
              if isinstance(row.get(key), (int, float)) and row.get("epoch") is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _mode(xs: list) -> str:
    """Markers show single epochs of short runs; on long runs they only clutter the line."""
    return "lines+markers" if len(xs) <= 30 else "lines"


def _epoch_ticks(rows: list[dict]) -> dict:
    """Whole epochs on the axis of a short run (plotly would label 1.5, 2.5, ...)."""
    epochs = [row["epoch"] for row in rows if isinstance(row.get("epoch"), (int, float))]
    return {"dtick": 1} if epochs and max(epochs) <= 20 else {}


def run_curves(rows: list[dict]) -> go.Figure:
    """Four panels of one run, per epoch."""
    # Room between the rows: the lower panels' titles sit clear of the upper panels' "epoch" axis titles.
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in PANELS],
                           horizontal_spacing=0.1, vertical_spacing=0.26)
    for index, (_, lines) in enumerate(PANELS):
        row, col = divmod(index, 2)
        for key, name, dashed in lines:
            xs, ys = _series(rows, key)
            if xs:
                figure.add_trace(go.Scatter(x=xs, y=ys, name=name, mode=_mode(xs),
                                            line={"dash": "dot" if dashed else "solid"}),
                                 row=row + 1, col=col + 1)
    figure.update_xaxes(title_text="epoch", **_epoch_ticks(rows))
    figure.update_layout(height=640, margin={"t": 40, "b": 20, "l": 10, "r": 10},
                         legend={"orientation": "h", "y": -0.16})
    return figure


def overlay(runs: dict[str, list[dict]], key: str) -> go.Figure:
    """One metric of several runs on the same axes."""
    figure = go.Figure()
    for label, rows in runs.items():
        xs, ys = _series(rows, key)
        figure.add_trace(go.Scatter(x=xs, y=ys, name=label, mode=_mode(xs)))
    figure.update_xaxes(**_epoch_ticks([row for rows in runs.values() for row in rows]))
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
