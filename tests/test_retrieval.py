"""The recitation's retrieval protocol on hand-made embeddings whose answers are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lib.eval.retrieval import (
    UNKNOWN,
    match,
    open_set_rates,
    rank1_accuracy,
    retrieval_report,
    split_gallery,
    threshold_at_far,
)


def _at(degrees: float) -> list[float]:
    """A unit vector in the plane: the cosine of two of them is the cosine of their angle apart."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# Gallery: ann at 0 deg, bob at 90 deg. Known probes: ann at 10 deg (nearest ann, cos 10 deg = 0.985),
# ann at 60 deg (nearest bob, 30 deg away: wrongly named), bob at 100 deg (nearest bob, 0.985). Unknown
# probes: 45 deg (equally near both, cos 0.707: a tie goes to the first entry, ann) and 200 deg
# (nearest bob, 110 deg away, cos -0.342).
GALLERY = np.array([_at(0), _at(90)])
PROBES = np.array([_at(10), _at(60), _at(100), _at(45), _at(200)])
LABELS = np.array([0, 0, 1, UNKNOWN, UNKNOWN])


def test_nearest_identity_and_rank1_by_hand():
    found = match(GALLERY, PROBES * 3.0, LABELS)  # length does not matter: cosine similarity
    assert found.nearest.tolist() == [0, 1, 1, 0, 1]
    np.testing.assert_allclose(found.similarity, [math.cos(math.radians(a)) for a in (10, 30, 10, 45, 110)],
                               atol=1e-12)
    assert rank1_accuracy(found) == pytest.approx(2 / 3)  # ann at 60 deg is taken for bob


@pytest.mark.parametrize("threshold, dir_, far", [
    (0.9, 2 / 3, 0.0),        # both right known probes pass (0.985); no unknown reaches 0.9
    (0.7, 2 / 3, 0.5),        # the unknown at 45 deg (0.707) gets in as ann
    (0.99, 0.0, 0.0),         # nothing passes
    (-1.0, 2 / 3, 1.0),       # everything passes: the wrong ann probe still counts as wrong
])
def test_detection_and_identification_rate_and_false_accepts(threshold, dir_, far):
    rates = open_set_rates(match(GALLERY, PROBES, LABELS), threshold)
    assert rates["dir"] == pytest.approx(dir_) and rates["far"] == pytest.approx(far)
    assert rates["rejected_unknown"] == pytest.approx(1 - far)


def test_threshold_at_a_false_accept_rate():
    found = match(GALLERY, PROBES, LABELS)
    strict = threshold_at_far(found, 0.0)  # just above the best unknown (0.707): none passes
    assert strict > math.cos(math.radians(45)) and open_set_rates(found, strict)["far"] == 0.0
    half = threshold_at_far(found, 0.5)  # one of two may pass: just above the second (-0.342)
    assert open_set_rates(found, half)["far"] == 0.5 and half > math.cos(math.radians(110))
    assert threshold_at_far(found, 1.0) == pytest.approx(math.cos(math.radians(110)))


def test_gallery_split_one_image_per_known_identity():
    identities = ["ann", "ann", "bob", "bob", "bob", "cy", "dee", "dee"]
    split = split_gallery(identities, known_share=1.0)
    assert split.names == ["ann", "bob", "dee"] and split.gallery.tolist() == [0, 2, 6]
    assert split.probes.tolist() == [1, 3, 4, 5, 7]
    assert split.probe_labels.tolist() == [0, 1, 1, UNKNOWN, 2]  # cy has one image: never in the gallery


def test_gallery_split_leaves_identities_out_by_a_stable_hash():
    identities = [f"person{k // 2}" for k in range(40)]  # 20 people, 2 images each
    split = split_gallery(identities, known_share=0.5, seed=3)
    again = split_gallery(list(identities), known_share=0.5, seed=3)
    assert len(split.names) == 10 and again.names == split.names and again.probes.tolist() == split.probes.tolist()
    unknown = {identities[i] for i, label in zip(split.probes, split.probe_labels) if label == UNKNOWN}
    assert len(unknown) == 10 and not unknown & set(split.names)  # left out: both images are probes
    assert split_gallery(identities, known_share=0.5, seed=4).names != split.names


def test_report_on_a_split_with_known_answers():
    identities = ["ann", "ann", "bob", "bob", "eve"]
    embeddings = np.array([_at(0), _at(10), _at(90), _at(100), _at(45)])
    report = retrieval_report(embeddings, split_gallery(identities, known_share=1.0), thresholds=[0.8],
                              far_targets=[0.0])
    assert (report.gallery_size, report.known_probes, report.unknown_probes) == (2, 2, 1)
    assert report.rank1 == 1.0
    assert report.rates[0] == {"threshold": 0.8, "dir": 1.0, "far": 0.0, "rejected_unknown": 1.0}
    assert report.rates[1]["far"] == 0.0 and report.rates[1]["threshold"] > math.cos(math.radians(45))


def test_no_identity_twice_is_a_clear_error():
    with pytest.raises(ValueError, match="no identity has two images"):
        split_gallery(["ann", "bob"])


def test_command_reports_the_protocol_on_a_checkpoint(tmp_path, capsys):
    """`python -m lib retrieval` on real images: its rank-1 equals the one worked out here from the
    evaluate command's embeddings and the identities in the file names."""
    import json

    from lib.__main__ import main
    from lib.data.datasets import load_pairs
    from lib.eval.metrics import embed
    from lib.store.checkpoint import load_checkpoint
    from tests.explore_models import make_mini_dataset
    from tests.test_submission import NORMALIZE, make_checkpoint

    root = make_mini_dataset(tmp_path / "mini", identities=3, pairs=20)
    folder = make_checkpoint(tmp_path / "best", ["a", "b", "c"])
    assert main(["retrieval", str(folder), "--data", str(root), "--known-share", "1", "--threshold", "0.5",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pairs = load_pairs(root)
    people = [path.split("/")[-1].rsplit("_", 1)[0] for path in pairs.paths]
    embeddings = embed(load_checkpoint(folder).model, pairs.images, NORMALIZE["mean"], NORMALIZE["std"]).numpy()
    first = {}
    for index, person in enumerate(people):
        first.setdefault(person, index)
    known = sorted(person for person in first if people.count(person) >= 2)
    gallery = embeddings[[first[person] for person in known]]
    probes = [i for i, person in enumerate(people) if person in known and i != first[person]]
    nearest = (embeddings[probes] @ gallery.T).argmax(axis=1)
    assert report["gallery_size"] == len(known) and report["known_probes"] == len(probes)
    assert report["rank1"] == pytest.approx(np.mean([known[n] == people[i] for n, i in zip(nearest, probes)]))
    assert report["rates"][0]["threshold"] == 0.5


def test_matching_in_blocks_equals_the_whole_similarity_matrix():
    rng = np.random.default_rng(3)
    gallery, probes = rng.normal(size=(50, 8)), rng.normal(size=(37, 8))
    labels = rng.integers(-1, 50, size=37)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    whole = unit(probes) @ unit(gallery).T
    for block_bytes in (1, 8 * 50 * 4, 10**9):  # one probe at a time, four, all at once
        found = match(gallery, probes, labels, block_bytes=block_bytes)
        assert np.array_equal(found.nearest, whole.argmax(axis=1))
        np.testing.assert_allclose(found.similarity, whole.max(axis=1), rtol=1e-12)
        assert np.array_equal(found.labels, labels)
