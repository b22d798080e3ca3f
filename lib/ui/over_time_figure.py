"""The "Embeddings over time" figure: a run's probe faces in 2-D, one animation frame per epoch,
with plotly's own slider and play button (they run in the browser: no page rerun per frame)."""
from __future__ import annotations

import math
from pathlib import PurePosixPath

import numpy as np
import plotly.graph_objects as go

from lib.explore.over_time import ProbeHistory
from lib.ui.explore_figures import PALETTE, pretty
from lib.ui.text import as_plain_html

FRAME_MS = 700  # one epoch per 0.7 s when playing: slow enough to follow one identity


def _title(row: dict) -> str:
    return (f"epoch {row['epoch']}: same identity {_number(row['same identity'])}, "
            f"different identities {_number(row['different identities'])}")


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2f}"


def _traces(history: ProbeHistory, coords: np.ndarray) -> list[go.Scatter]:
    """One trace per identity (its color and legend entry), in the probe set's order."""
    traces = []
    for color_index, identity in enumerate(dict.fromkeys(history.identities)):
        members = [i for i, name in enumerate(history.identities) if name == identity]
        name = as_plain_html(pretty(identity))  # a folder's name: anyone's text, never markup
        traces.append(go.Scatter(
            x=coords[members, 0], y=coords[members, 1], mode="markers", name=name,
            marker={"size": 10, "color": PALETTE[color_index % len(PALETTE)], "line": {"width": 0.5, "color": "white"}},
            text=[as_plain_html(PurePosixPath(history.paths[i]).name) for i in members],
            hovertemplate=name + "<br>%{text}<extra></extra>"))
    return traces


def _axis_range(values: np.ndarray) -> list[float]:
    low, high = float(values.min()), float(values.max())
    pad = max(0.05, (high - low) * 0.08)
    return [low - pad, high + pad]


def over_time_figure(history: ProbeHistory, coords: np.ndarray, table: list[dict]) -> go.Figure:
    """Probes of every epoch (``coords`` [E, N, 2] from lib.explore.over_time.shared_pca), a slider
    over the epochs and a play button; each frame's title gives that epoch's mean cosines."""
    frames = [go.Frame(name=str(epoch), data=_traces(history, coords[e]), layout={"title": {"text": _title(table[e])}})
              for e, epoch in enumerate(history.epochs)]
    figure = go.Figure(data=frames[0].data, frames=frames)
    play = {"frame": {"duration": FRAME_MS, "redraw": True}, "fromcurrent": True, "transition": {"duration": 300}}
    steps = [{"label": str(epoch), "method": "animate",
              "args": [[str(epoch)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                      "transition": {"duration": 0}}]} for epoch in history.epochs]
    figure.update_layout(
        title={"text": _title(table[0]), "font": {"size": 14}}, height=620,
        xaxis={"range": _axis_range(coords[..., 0]), "title": "PCA 1 (fitted on all epochs)"},
        yaxis={"range": _axis_range(coords[..., 1]), "title": "PCA 2"},
        margin={"t": 50, "b": 10, "l": 10, "r": 10},
        legend={"orientation": "h", "x": 0, "y": -0.42, "yanchor": "top"},  # below: the points get the width
        # Play and pause to the left of the epoch slider, both below the x axis and its title.
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0.17, "xanchor": "right", "y": -0.2,
                      "yanchor": "top", "showactive": False, "pad": {"r": 10, "t": 10},
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                  {"label": "❚❚ Pause", "method": "animate",
                                   "args": [[None], {"mode": "immediate", "frame": {"duration": 0}}]}]}],
        sliders=[{"active": 0, "steps": steps, "x": 0.19, "len": 0.81, "xanchor": "left", "y": -0.2,
                  "yanchor": "top", "currentvalue": {"prefix": "epoch ", "xanchor": "right"}, "pad": {"t": 0}}])
    return figure
