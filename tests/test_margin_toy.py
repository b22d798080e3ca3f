"""The margin toy and the geometry of the Margins page, against hand-computed values."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from lib.base import config
from lib.explore import margin_toy
from lib.explore import margins as geo
from lib.losses.margins import target_logit


@pytest.fixture(scope="module")
def data():
    return margin_toy.toy_data(config.EMBEDDED_DATA, 4)


def test_toy_takes_the_identities_with_most_training_images(data):
    train = config.EMBEDDED_DATA / "cls_data" / "train"
    counts = {name: len(os.listdir(train / name)) for name in os.listdir(train)}
    expected = sorted(sorted(counts, key=lambda n: (-counts[n], n))[:4])
    assert data.names == expected
    assert len(data.train_y) == sum(counts[n] for n in expected)
    assert data.train_x.shape == (len(data.train_y), margin_toy.INPUT_DIM)
    assert set(data.dev_y.tolist()) <= set(range(4)) and len(data.dev_y) > 0
    again = margin_toy.toy_data(config.EMBEDDED_DATA, 4)
    assert torch.equal(again.train_x, data.train_x)  # exact SVD: the same toy every time


def test_cross_entropy_separates_and_a_margin_compacts(data):
    ce = margin_toy.train_toy(data, "ce", steps=300)
    cosface = margin_toy.train_toy(data, "cosface", steps=300, schedule="sequential")
    assert ce.train_acc >= 0.9 and cosface.train_acc >= 0.9
    assert ce.features.shape == (len(data.train_y), 2) and ce.directions.shape == (4, 2)
    np.testing.assert_allclose(np.linalg.norm(cosface.directions, axis=1), 1.0, rtol=1e-5)
    assert cosface.intra_angle_deg < ce.intra_angle_deg
    assert len(ce.losses) == 300 and ce.losses[-1] < ce.losses[0]


def test_sequential_starts_as_cross_entropy(data):
    """The first half of a sequential run is exactly a CE run with the same seed."""
    ce = margin_toy.train_toy(data, "ce", steps=40, seed=3)
    sequential = margin_toy.train_toy(data, "arcface", steps=80, schedule="sequential", seed=3)
    np.testing.assert_allclose(sequential.losses[:20], ce.losses[:20], rtol=1e-5)
    assert len(sequential.losses) == 80


def test_joint_adds_the_weighted_center_term_and_pulls_classes_tighter(data):
    """Joint (the course's sense): 0.7 x CE + 0.3 x center from the first step, the engine's own JointLoss."""
    scratch = margin_toy.train_toy(data, "ce", steps=300, seed=1)
    joint = margin_toy.train_toy(data, "ce", steps=300, schedule="joint", seed=1)
    assert joint.schedule == "joint" and joint.train_acc >= 0.9
    assert joint.losses[0] != pytest.approx(scratch.losses[0])  # a different objective from the first step
    assert joint.intra_angle_deg < scratch.intra_angle_deg  # the center term compacts each class
    np.testing.assert_allclose(np.linalg.norm(joint.directions, axis=1), 1.0, rtol=1e-5)  # CE's classifier rows
    with pytest.raises(ValueError, match="already CE plus a metric term"):
        margin_toy.train_toy(data, "center", steps=20, schedule="joint")


def test_angular_spread_by_hand():
    angles = np.radians([-5, 0, 5, 115, 120, 125, 235, 240, 245])
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.arange(1, 10)[:, None]
    labels = np.repeat([0, 1, 2], 3)
    intra, gap = margin_toy.angular_spread(features, labels, 3)
    assert intra == pytest.approx(10 / 3, abs=1e-6)  # offsets 5, 0, 5 per class
    assert gap == pytest.approx(110.0, abs=1e-6)


def test_toy_rejects_bad_settings(data):
    with pytest.raises(ValueError, match="loss"):
        margin_toy.train_toy(data, "hinge")
    with pytest.raises(ValueError, match="schedule"):
        margin_toy.train_toy(data, "ce", schedule="later")
    with pytest.raises(ValueError, match="steps"):
        margin_toy.train_toy(data, "ce", steps=1)
    with pytest.raises(ValueError, match="identities"):
        margin_toy.toy_data(config.EMBEDDED_DATA, 1)
    with pytest.raises(ValueError, match="no parameter"):
        margin_toy.train_toy(data, "arcface", {"margin_cos": 0.2})


@pytest.mark.parametrize("name,m", [("softmax", 0.0), ("sphereface", 2), ("sphereface", 4),
                                    ("cosface", 0.35), ("arcface", 0.5)])
@pytest.mark.parametrize("separation", [60, 90, 150])
def test_margin_zone_matches_the_formula(name, m, separation):
    regions = geo.two_class_regions(name, 30.0, m, separation)
    assert regions["zone_deg"] == pytest.approx(geo.expected_zone_deg(name, m, separation), abs=0.5)


def test_margin_zone_formulas_by_hand():
    assert geo.expected_zone_deg("sphereface", 4, 90) == pytest.approx(54.0)   # 90 * 3/5
    assert geo.expected_zone_deg("arcface", 0.5, 90) == pytest.approx(math.degrees(0.5))
    # CosFace at 90 degrees: cos t - sin t = m at the boundary
    t = math.radians(45 - geo.expected_zone_deg("cosface", 0.35, 90) / 2)
    assert math.cos(t) - math.cos(math.pi / 2 - t) == pytest.approx(0.35)


def test_logit_curves_evaluate_the_losses_target_logit():
    curves = geo.logit_curves(16.0, {"arcface": 0.5, "sphereface": 3})
    theta, softmax = curves["softmax"]
    np.testing.assert_allclose(softmax, 16.0 * np.cos(np.radians(theta)), atol=1e-9)
    assert set(curves) == {"softmax", "arcface", "sphereface"}
    index = np.searchsorted(theta, 40.0)
    assert curves["arcface"][1][index] == pytest.approx(16.0 * math.cos(math.radians(theta[index]) + 0.5))
    assert curves["sphereface"][1][index] == pytest.approx(
        float(target_logit("sphereface", np.radians(theta[index]), 16.0, 3)))
