"""The recitation's retrieval protocol on a data set's verification images, with a model.

The verification images are named by person (LFW's ``<Name>_<NNNN>.jpg``), so they give a
gallery and probes without a new file: ``lib.eval.retrieval.split_gallery`` keeps one image
of some identities as the gallery and probes with the rest. Verification pairs only ask
"same or not?"; this asks "who is it, or nobody we know?".
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from lib.eval.retrieval import RetrievalReport, retrieval_report, split_gallery
from lib.explore.models import ExploreModel, cached_embeddings, identity_of, image_choice


def identities_of(paths: Sequence[str]) -> list[str]:
    return [identity_of(path) for path in paths]


def model_retrieval(model: ExploreModel, root, thresholds: Sequence[float] = (), far_targets=(0.1, 0.01),
                    known_share: float = 0.5, seed: int = 0,
                    progress: Callable[[float], None] | None = None) -> RetrievalReport:
    """Rank-1 accuracy and open-set rates of a model on the verification images of ``root``;
    ValueError when the images name no person twice (no gallery and probe can be made)."""
    choice = image_choice(root, "verification")
    split = split_gallery(identities_of(choice.paths), known_share, seed)
    embeddings = cached_embeddings(model, choice.images, progress, choice.fingerprint)
    return retrieval_report(embeddings, split, thresholds, far_targets)
