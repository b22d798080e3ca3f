"""The Augment page, driven with Streamlit's AppTest: what a student sees and what reaches Train."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.data.augment import DEFAULT_PIPELINE, validate_pipeline
from lib.ui.text import as_plain_markdown
from tests.synthetic_data import make_dataset

PAGE = str(Path(__file__).resolve().parent.parent / "views" / "augment.py")


def page(root=None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    if root is not None:
        at.session_state["facelab.data_root"] = str(root)
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def test_default_view_teaches_and_hands_the_pipeline_to_training():
    at = page()
    assert not at.exception and not at.error
    assert at.multiselect(key="augment.names").value == [step["name"] for step in DEFAULT_PIPELINE]
    assert "298 identities, 2,802 training images of 64x64" in texts(at.caption)
    infos = texts(at.info)
    assert "Why augment" in infos and "Normalize with the data set's own statistics" in infos and "MixUp" in infos
    assert not at.warning  # the default pipeline is a sensible one
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics == {"identities": "298", "train": "2,802", "dev": "691", "verification": "1,549",
                       "pairs": "1,000", "same person": "500"}
    captions = image_captions(at)
    assert any(c.startswith("Rows: ") and "then 5 samples of the pipeline (seed 0)" in c for c in captions)
    assert captions.count("original") == 1 and "3. ColorJitter" in captions  # the step inspector
    assert sum(" A + " in c and c.endswith(" B") for c in captions) == 5  # five MixUp draws with their labels
    assert sum(" vs " in c for c in captions) == 8  # four same and four different verification pairs
    at.button(key="augment.handoff").click().run()
    assert at.session_state["facelab.pipeline"] == DEFAULT_PIPELINE
    assert "Training will use: RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter" in texts(at.success)


def test_harmful_transform_is_explained_and_mistakes_are_errors_not_tracebacks():
    at = page()
    at.multiselect(key="augment.names").select("RandomVerticalFlip").run()
    assert "upside-down faces never occur" in texts(at.warning)
    at.slider(key="augment.param.RandomVerticalFlip.p").set_value(1.0).run()
    at.button(key="augment.handoff").click().run()
    handed = at.session_state["facelab.pipeline"]
    assert handed[-1] == {"name": "RandomVerticalFlip", "params": {"p": 1.0}}
    at.multiselect(key="augment.names").set_value(["RandomVerticalFlip", "Normalize", "RandomGrayscale"]).run()
    assert not at.exception and "must be the last step" in texts(at.error)
    assert at.button(key="augment.handoff").disabled and at.image  # previews of the last working pipeline
    at.multiselect(key="augment.names").unselect("Normalize").run()
    assert at.multiselect(key="augment.names").value == ["RandomVerticalFlip", "RandomGrayscale"]
    assert not at.error and at.slider(key="augment.param.RandomVerticalFlip.p").value == 1.0  # nothing lost
    reset = at.button(key="augment.reset")
    assert reset.label == "Default" and "RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter" in reset.help
    reset.click().run()
    assert at.multiselect(key="augment.names").value == [step["name"] for step in DEFAULT_PIPELINE]
    at.button(key="augment.clear").click().run()
    assert at.multiselect(key="augment.names").value == [] and not at.exception


def test_json_import_loads_a_pipeline_and_rejects_a_bad_one():
    at = page()
    good = [{"name": "RandomRotation", "params": {"degrees": 60}}, {"name": "RandomGrayscale", "params": {"p": 0.2}}]
    at.text_area(key="augment.json_in").input(json.dumps(good)).run()
    at.button(key="augment.import").click().run()
    assert at.multiselect(key="augment.names").value == ["RandomRotation", "RandomGrayscale"]
    assert at.slider(key="augment.param.RandomRotation.degrees").value == 60.0
    assert "aligned upright" in texts(at.warning)
    at.text_area(key="augment.json_in").input('[{"name": "RandomRotation", "params": {"degrees": 500}}]').run()
    at.button(key="augment.import").click().run()
    assert as_plain_markdown("degrees = 500 is out of range") in texts(at.error) and not at.exception
    assert at.multiselect(key="augment.names").value == ["RandomRotation", "RandomGrayscale"]  # kept
    at.button(key="augment.handoff").click().run()
    assert at.session_state["facelab.pipeline"] == validate_pipeline(good)


def test_other_data_sets_112_pixels_and_a_broken_one(tmp_path):
    make_dataset(tmp_path / "big", {"ann": 3, "bob": 3}, {"ann": 1, "bob": 1}, size=112)
    at = page(tmp_path / "big")
    assert not at.exception and not at.error
    assert "2 identities, 6 training images of 112x112" in texts(at.caption)
    (tmp_path / "big/cls_data/train/ann/ann_0000.png").write_bytes(b"\x89PNG broken")
    at = page(tmp_path / "big")
    assert not at.exception and "found **1 problem**" in texts(at.caption)
    assert as_plain_markdown("cls_data/train/ann/ann_0000.png: not a decodable image (skipped)") in texts(at.warning)
    assert {m.label: m.value for m in at.metric}["train"] == "5"
    (tmp_path / "empty").mkdir()
    at = page(tmp_path / "empty")
    assert not at.exception and "cannot be loaded" in texts(at.error) and "data-check" in texts(at.error)
