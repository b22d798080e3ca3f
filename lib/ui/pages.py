"""The app's pages in workflow order: one registry used by app.py for navigation
and by the home page for its guided tour."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    section: str
    summary: str


PAGES = (
    PageInfo("views/home.py", "Home", ":material/home:", "FaceLab",
             "What FaceLab teaches and where to start."),
    PageInfo("views/build.py", "Build", ":material/construction:", "1 - Build",
             "Assemble a CNN block by block and watch parameters and MACs change."),
    PageInfo("views/augment.py", "Augment", ":material/auto_fix_high:", "2 - Augment",
             "Preview augmentations on real faces, seeded and step by step, with MixUp and CutMix."),
    PageInfo("views/train.py", "Train", ":material/model_training:", "3 - Train",
             "Launch a training job in the background: a loss, an optimizer, a recipe."),
    PageInfo("views/runs.py", "Runs", ":material/monitoring:", "3 - Train",
             "Watch jobs live, cancel or resume them, and compare runs."),
    PageInfo("views/embeddings.py", "Embeddings", ":material/scatter_plot:", "4 - Explore",
             "CE vs ArcFace vs CosFace vs SphereFace: embedding plots, ROC, EER, thresholds."),
    PageInfo("views/saliency.py", "Saliency", ":material/visibility:", "4 - Explore",
             "What the network looks at, for a class and for a verification pair."),
    PageInfo("views/margins.py", "Margins", ":material/architecture:", "4 - Explore",
             "The geometry of margin losses, and a toy that trains live in seconds."),
    PageInfo("views/inspect.py", "Inspect", ":material/folder_open:", "4 - Explore",
             "Open any checkpoint (or upload one): spec, counts, metrics, embeddings."),
    PageInfo("views/leaderboard.py", "Leaderboard", ":material/leaderboard:", "5 - Submit",
             "The class ranking on the hidden test pairs: public AUC for all, private for instructors."),
)
