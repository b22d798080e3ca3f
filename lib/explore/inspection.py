"""The checkpoint inspector's content: what a checkpoint holds, in tables and curves."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.explore.models import ExploreModel, margin_class_weights, normalization
from lib.model.limits import check_explorable
from lib.model.net import count_params
from lib.model.spec import ModelSpec, embedding_dim, stage_output_sizes
from lib.store.checkpoint import LOSS_FILE, MODEL_FILE
from lib.store.meta import META_FILE, CheckpointMeta
from lib.store.run_folder import RunFolder
from lib.store.upload import UploadedCheckpoint


def from_upload(uploaded: UploadedCheckpoint, label: str) -> ExploreModel:
    """An uploaded checkpoint as an ExploreModel (no folder on disk: it lives in memory). ResourceRefused
    for a model over this host's limits (lib.store.upload refuses such a file already; this holds for
    an UploadedCheckpoint made any other way too)."""
    check_explorable(uploaded.spec)
    mean, std = normalization(uploaded.meta)
    return ExploreModel(label, Path(label), uploaded.model, uploaded.meta, mean, std,
                        margin_class_weights(uploaded.meta, uploaded.loss_state), uploaded.fingerprint)


def _recorded(value) -> str:
    return "?" if value is None else str(value)


def facts(spec: ModelSpec, meta: CheckpointMeta) -> dict[str, str]:
    """The headline numbers of a checkpoint, as text ("?" for what it does not record)."""
    config = meta.config
    return {
        "model": spec.name,
        "parameters": f"{count_params(spec):,}",
        "input": f"{spec.in_chs} x {spec.input_size} x {spec.input_size}",
        "identities (classes)": f"{spec.num_classes:,}",
        "embedding size": str(embedding_dim(spec)),
        "loss": _recorded(meta.loss),
        "best epoch": _recorded(meta.epoch),  # the checkpoint is the run's best, not its last
        "trained on": Path(str(config.get("data_root", "?"))).name,
        "created": _recorded(meta.created),
    }


def stage_table(spec: ModelSpec) -> pd.DataFrame:
    sizes = stage_output_sizes(spec)
    rows = [{"part": "stem", "block": spec.stem.kind, "channels": spec.stem.out_chs, "depth": 1,
             "stride": spec.stem.stride, "output": f"{sizes[0]}x{sizes[0]}"}]
    for index, stage in enumerate(spec.stages):
        rows.append({"part": f"stage {index + 1}", "block": stage.block, "channels": stage.out_chs,
                     "depth": stage.depth, "stride": stage.stride, "output": f"{sizes[index + 1]}x{sizes[index + 1]}"})
    return pd.DataFrame(rows)


METRIC_TITLES = {"dev_top1": "dev top-1", "dev_top5": "dev top-5", "auc": "ROC AUC", "eer": "EER",
                 "tpr_at_fpr_1e-2": "TPR@FPR 1e-2", "tpr_at_fpr_1e-3": "TPR@FPR 1e-3"}


def headline_metrics(meta: CheckpointMeta) -> dict[str, str]:
    shown = {}
    for key, title in METRIC_TITLES.items():
        value = meta.metrics.get(key)
        if isinstance(value, (int, float)):
            shown[title] = f"{value:.4f}" if key == "auc" else f"{value:.1%}"
    return shown


def files_table(folder: Path) -> pd.DataFrame:
    descriptions = {MODEL_FILE: "the network's weights (tensors only: nothing runs on load)",
                    LOSS_FILE: "the loss head's own weights (e.g. ArcFace class centers)",
                    META_FILE: "spec, training config, class names, metrics, normalization"}
    rows = [{"file": name, "size": f"{(folder / name).stat().st_size / 1024:,.0f} KiB", "holds": text}
            for name, text in descriptions.items() if (folder / name).is_file()]
    return pd.DataFrame(rows)


def run_metrics(folder: Path) -> list[dict]:
    """The per-epoch rows of the run a checkpoint belongs to (runs/<id>/best -> runs/<id>/metrics.jsonl),
    or of the folder itself when it is a run folder."""
    for run in (RunFolder(folder), RunFolder(folder.parent)):
        if run.metrics_file.is_file():
            return run.read_metrics()
    return []


def curves_figure(rows: list[dict]) -> go.Figure | None:
    """Training loss, and dev top-1 / AUC per epoch, from metrics.jsonl rows."""
    rows = [r for r in rows if isinstance(r.get("epoch"), (int, float))]
    if not rows:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "accuracy and verification AUC"))
    epochs = [r["epoch"] for r in rows]
    for key, col, name in (("train_loss", 1, "train loss"), ("dev_top1", 2, "dev top-1"), ("auc", 2, "AUC"),
                           ("train_acc", 2, "train accuracy")):
        values = [r.get(key) for r in rows]
        if any(isinstance(v, (int, float)) for v in values):
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=name), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    # The left chart's one curve is named by its title; the legend sits under the right chart it
    # explains (a horizontal legend would start under the left one).
    fig.update_traces(showlegend=False, row=1, col=1)
    right_start = fig.layout.xaxis2.domain[0]
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "x": right_start, "xanchor": "left", "y": -0.3,
                              "yanchor": "top"})
    return fig
