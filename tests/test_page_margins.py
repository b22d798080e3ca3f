"""The Margins page, driven like a student would: read the numbers, move the sliders."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.explore import margins as geo

PAGE = str(config.PROJECT_ROOT / "views" / "margins.py")


@pytest.fixture(scope="module")
def app():
    return AppTest.from_file(PAGE, default_timeout=120).run()


def _zones(app) -> dict[str, float]:
    metrics = [m for m in app.metric if m.label == "Margin zone between the classes"]
    return {name: float(m.value.split()[0]) for name, m in zip(geo.CURVES, metrics)}


def test_page_shows_the_three_parts_and_the_lessons(app):
    assert not app.exception
    headers = [h.value for h in app.header]
    assert headers[0].startswith("1. The target logit") and headers[2].startswith("3. A live toy")
    expanders = [e.label for e in app.expander]
    for title in ("SphereFace: multiplicative angular margin", "CosFace: additive cosine margin",
                  "ArcFace: additive angular margin", "Joint vs sequential training"):
        assert title in expanders


def test_margin_zones_follow_the_sliders(app):
    app.select_slider(key="margins.sphere_lambda").set_value(0.0).run()  # the pure m = 4 margin, no blending
    zones = _zones(app)
    assert zones["softmax"] == pytest.approx(0.0, abs=0.3)
    assert zones["sphereface"] == pytest.approx(geo.expected_zone_deg("sphereface", 4, 90), abs=0.6)
    assert zones["arcface"] == pytest.approx(28.6, abs=0.6)
    app.slider(key="margins.arc_m").set_value(0.3).run()
    app.slider(key="margins.separation").set_value(150).run()
    zones = _zones(app)
    assert zones["arcface"] == pytest.approx(17.2, abs=0.6)  # 0.3 rad, whatever the separation
    assert zones["sphereface"] == pytest.approx(90.0, abs=0.6)  # 150 * 3 / 5
    assert "17.2 degrees" in " ".join(c.value for c in app.caption)


def test_toy_table_lists_each_loss_and_the_sphereface_family(app):
    table = app.dataframe[0].value
    assert list(table["loss"]) == ["Cross-entropy", "SphereFace", "CosFace", "ArcFace"]
    accuracy = [float(v.rstrip("%")) for v in table["train acc."]]
    assert min(accuracy) >= 90
    app.radio(key="margins.toy_mode").set_value("SphereFace m = 1, 2, 3, 4")
    app.button[0].click().run()
    table = app.dataframe[0].value
    assert list(table["loss"]) == [f"SphereFace m={m}" for m in (1, 2, 3, 4)]
    spread = list(table["spread (deg)"])
    assert spread[3] < spread[0]  # the A-Softmax picture: a larger m packs each identity tighter


def test_no_loss_chosen_says_what_to_do():
    app = AppTest.from_file(PAGE, default_timeout=120).run()
    app.multiselect(key="margins.toy_losses").set_value([])
    app.button[0].click().run()
    assert not app.exception
    assert "Pick one to four losses" in app.error[0].value


def test_the_toy_compares_scratch_joint_and_sequential(app):
    app.radio(key="margins.toy_mode").set_value("schedules side by side")
    next(b for b in app.button if "Train the toys" in b.label).click().run()
    assert not app.exception and not app.error
    table = next(frame.value for frame in app.dataframe if "gap (deg)" in frame.value.columns)
    assert [row.split(", ")[-1] for row in table["loss"]] == ["scratch", "joint", "sequential"]
