"""Plotly figures of the Embeddings and Inspect pages: embedding scatters (2-D and on
the sphere), overlaid ROC curves, same/different similarity histograms, face thumbnails."""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from lib.explore.models import ImageChoice
from lib.ui.text import as_plain_html, as_plain_markdown

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
MODEL_COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa")
OTHERS = "#c8c8c8"
MAX_THUMBNAILS = 40  # face pictures drawn inside one panel for the highlighted identity


def data_uri(image: torch.Tensor | np.ndarray) -> str:
    """A uint8 CHW (or HWC) image as a PNG data URI (for plotly layout images)."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pretty(name: str) -> str:
    return name.replace("_", " ")


def markdown_name(name: str) -> str:
    """An identity (a folder's name: anyone's text) as markdown that shows it literally, underscores
    as spaces."""
    return as_plain_markdown(pretty(name))


def _groups(choice: ImageChoice, colored: list[int]):
    """(label, color, indices) for the colored identities, then everyone else in gray. Labels are
    the identity folders' names as they are: each output escapes them for its own renderer."""
    groups = [(pretty(choice.names[c]), PALETTE[i % len(PALETTE)], np.flatnonzero(choice.labels == c))
              for i, c in enumerate(colored)]
    rest = np.flatnonzero(~np.isin(choice.labels, colored))
    if rest.size:
        groups.append(("other identities", OTHERS, rest))
    return groups


def legend_html(choice: ImageChoice, colored: list[int]) -> str:
    """One legend for all panels (a legend inside each panel would shrink that panel alone). It is
    markdown with HTML allowed, so a folder name is escaped for both."""
    chips = [f'<span style="white-space:nowrap"><span style="color:{color};font-size:1.3em">&#9679;</span>'
             f'&nbsp;{as_plain_markdown(label)}</span>' for label, color, _ in _groups(choice, colored)]
    return "&emsp;".join(chips)


def _hover(choice: ImageChoice, indices: np.ndarray) -> list[str]:
    """Identity and file name of each point; plotly renders hover text as HTML, so both are escaped."""
    return [f"{as_plain_html(pretty(choice.names[choice.labels[i]]))}<br>"
            f"{as_plain_html(choice.paths[i].split('/')[-1])}" for i in indices]


def scatter_2d(coords: np.ndarray, choice: ImageChoice, colored: list[int], highlight: int | None,
               title: str, show_legend: bool) -> go.Figure:
    fig = go.Figure()
    for label, color, indices in _groups(choice, colored):
        gray = color == OTHERS
        fig.add_trace(go.Scattergl(
            x=coords[indices, 0], y=coords[indices, 1], mode="markers", name=as_plain_html(label),
            legendgroup=as_plain_html(label), showlegend=show_legend, customdata=indices,
            hovertext=_hover(choice, indices), hoverinfo="text", marker={"color": color, "size": 4 if gray else 7, "opacity": 0.45 if gray else 0.9}))
    if highlight is not None:
        _highlight_2d(fig, coords, choice, highlight)
    fig.update_layout(title=as_plain_html(title), height=430, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.05, "font": {"size": 10}}, plot_bgcolor="white",
                      dragmode="lasso")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x")
    return fig


def _highlight_2d(fig: go.Figure, coords: np.ndarray, choice: ImageChoice, identity: int) -> None:
    """The chosen identity as large outlined markers, with its faces drawn beside them."""
    indices = np.flatnonzero(choice.labels == identity)
    fig.add_trace(go.Scatter(
        x=coords[indices, 0], y=coords[indices, 1], mode="markers",
        name=as_plain_html(pretty(choice.names[identity])),
        customdata=indices, hovertext=_hover(choice, indices), hoverinfo="text", showlegend=False,
        marker={"color": "#000000", "size": 13, "symbol": "circle-open", "line": {"width": 3}}))
    span = float(np.ptp(coords[:, 0])) or 1.0
    size = span * 0.07
    for i in indices[:MAX_THUMBNAILS]:
        fig.add_layout_image(source=data_uri(choice.images[i]), x=float(coords[i, 0]), y=float(coords[i, 1]),
                             xref="x", yref="y", sizex=size, sizey=size, xanchor="center", yanchor="middle",
                             layer="above")


def on_sphere(coords: np.ndarray) -> np.ndarray:
    """3-D coordinates pushed onto the unit sphere (their direction is what cosine similarity sees)."""
    norms = np.linalg.norm(coords, axis=1, keepdims=True)
    return coords / np.maximum(norms, 1e-9)


def scatter_sphere(coords: np.ndarray, choice: ImageChoice, colored: list[int], highlight: int | None,
                   title: str, show_legend: bool) -> go.Figure:
    points = on_sphere(coords)
    fig = go.Figure()
    u, v = np.mgrid[0:2 * np.pi:40j, 0:np.pi:20j]
    fig.add_trace(go.Surface(x=np.cos(u) * np.sin(v) * 0.98, y=np.sin(u) * np.sin(v) * 0.98, z=np.cos(v) * 0.98,
                             opacity=0.15, showscale=False, colorscale=[[0, "#dddddd"], [1, "#dddddd"]],
                             hoverinfo="skip"))
    for label, color, indices in _groups(choice, colored):
        gray = color == OTHERS
        fig.add_trace(go.Scatter3d(
            x=points[indices, 0], y=points[indices, 1], z=points[indices, 2], mode="markers",
            name=as_plain_html(label), legendgroup=as_plain_html(label), showlegend=show_legend,
            hovertext=_hover(choice, indices), hoverinfo="text",
            marker={"color": color, "size": 2 if gray else 4, "opacity": 0.5 if gray else 0.95}))
    if highlight is not None:
        indices = np.flatnonzero(choice.labels == highlight)
        fig.add_trace(go.Scatter3d(x=points[indices, 0], y=points[indices, 1], z=points[indices, 2], mode="markers",
                                   hovertext=_hover(choice, indices), hoverinfo="text", showlegend=False,
                                   marker={"color": "#000000", "size": 7, "symbol": "diamond"}))
    axis = {"visible": False, "range": [-1.1, 1.1]}
    fig.update_layout(title=as_plain_html(title), height=430, margin={"l": 0, "r": 0, "t": 40, "b": 0},
                      legend={"orientation": "h", "y": -0.05, "font": {"size": 10}},
                      scene={"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "cube",
                             "camera": {"eye": {"x": 0.95, "y": 0.95, "z": 0.6}}})
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], log_fpr: bool = True) -> go.Figure:
    """Overlaid ROC curves {label: (fpr, tpr)}; a log FPR axis shows the low-FPR end that matters."""
    fig = go.Figure()
    for index, (label, (fpr, tpr)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=np.clip(fpr, 1e-4, 1) if log_fpr else fpr, y=tpr, mode="lines",
                                 name=as_plain_html(label),
                                 line={"color": MODEL_COLORS[index % len(MODEL_COLORS)], "width": 3}))
    chance = np.logspace(-4, 0, 60) if log_fpr else np.array([0.0, 1.0])  # y = x is a curve on a log axis
    fig.add_trace(go.Scatter(x=chance, y=chance, mode="lines", name="chance", line={"color": "#aaaaaa", "dash": "dot"}))
    fig.update_layout(height=400, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="ROC curves",
                      xaxis_title="false accept rate (FPR)" + (", log scale" if log_fpr else ""),
                      yaxis_title="true accept rate (TPR)", legend={"orientation": "h", "y": -0.2})
    if log_fpr:
        fig.update_xaxes(type="log", range=[-3.05, 0])
    return fig


def start_threshold(eer_threshold: float) -> float:
    """Where the threshold slider starts: the EER threshold on the slider's 0.01 grid, inside [-1, 1]
    (a model that has not learned yet can have its EER threshold below zero)."""
    value = float(eer_threshold)
    return round(min(1.0, max(-1.0, value)), 2) if np.isfinite(value) else 0.5


def histogram_figure(views: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float) -> go.Figure:
    """Cosine similarity of same-person (green) and different-person (red) pairs, per checkpoint."""
    fig = make_subplots(rows=1, cols=len(views), subplot_titles=[as_plain_html(label) for label in views],
                        shared_yaxes=True, horizontal_spacing=0.03)
    bins = {"start": -1.0, "end": 1.0, "size": 0.04}
    for col, (label, (scores, labels)) in enumerate(views.items(), start=1):
        for value, name, color in ((1, "same person", "#2ca02c"), (0, "different people", "#d62728")):
            fig.add_trace(go.Histogram(x=scores[labels == value], xbins=bins, name=name, legendgroup=name,
                                       showlegend=col == 1, marker={"color": color}, opacity=0.6),
                          row=1, col=col)
        fig.add_vline(x=threshold, line={"color": "#000000", "dash": "dash"}, row=1, col=col)
    fig.update_layout(barmode="overlay", height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title_text="cosine similarity", range=[min(-0.6, threshold - 0.05), 1.0])
    return fig
