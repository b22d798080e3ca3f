"""The home page: the demo checkpoints in the lesson's order, and a strip of real faces."""
from __future__ import annotations

import json

import numpy as np
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.ui.home import demo_summary, face_strip
from lib.ui.text import as_plain_markdown
from tests.synthetic_data import make_dataset


def test_demo_checkpoints_come_in_the_lessons_order():
    shipped = {json.loads(p.read_text())["loss"] for p in config.CHECKPOINTS_DIR.glob("*/meta.json")}
    order = [loss for loss in ("ce", "arcface", "cosface", "sphereface") if loss in shipped]
    assert [row["loss"] for row in demo_summary()] == order
    assert [row["checkpoint"] for row in demo_summary()][:1] == ["demo-ce"] * bool(order)


def test_face_strip_shows_real_files_of_different_people_the_same_for_a_seed(tmp_path):
    written = make_dataset(tmp_path, {f"person{k}": 3 for k in range(10)}, {"person0": 1})
    strip = face_strip(tmp_path, count=6, seed=3)
    names = [name for _, name in strip]
    assert len(strip) == 6 and len(set(names)) == 6
    for picture, name in strip:  # each picture is one of that person's files, pixel for pixel
        files = [pixels for rel, pixels in written.items() if rel.startswith(f"cls_data/train/{name}/")]
        assert any(np.array_equal(picture, pixels) for pixels in files), name
    again = face_strip(tmp_path, count=6, seed=3)
    assert [n for _, n in again] == names and all(np.array_equal(a, b) for (a, _), (b, _) in zip(again, strip))
    assert [n for _, n in face_strip(tmp_path, count=6, seed=4)] != names
    assert face_strip(tmp_path / "missing") == []


def test_home_shows_faces_of_the_data_set_in_use():
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60).run()
    assert not app.exception
    captions = [caption for image in app.image for caption in image.captions]
    strip = face_strip(config.EMBEDDED_DATA, count=8, seed=0)
    expected = [as_plain_markdown(name.replace("_", " ")) for _, name in strip]  # captions are markdown
    assert captions == expected and len(expected) == 8
    assert any("8 training faces of lfw64" in c.value for c in app.caption)
