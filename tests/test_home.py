"""The home page: the demo checkpoints in the lesson's order."""
from __future__ import annotations

import json

from lib import config
from lib.home import demo_summary


def test_demo_checkpoints_come_in_the_lessons_order():
    shipped = {json.loads(p.read_text())["loss"] for p in config.CHECKPOINTS_DIR.glob("*/meta.json")}
    order = [loss for loss in ("ce", "arcface", "cosface", "sphereface") if loss in shipped]
    assert [row["loss"] for row in demo_summary()] == order
    assert [row["checkpoint"] for row in demo_summary()][:1] == ["demo-ce"] * bool(order)
