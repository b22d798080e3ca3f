"""Names that come from users (identity and data set folders, run names) are shown as text: never
as markdown, HTML or a plotly tag, on the pages that show them."""
from __future__ import annotations

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.ui.text import as_plain_html, as_plain_markdown
from tests.explore_models import make_mini_dataset, make_runs

TAG = "<img src=x onerror=alert(1)>"
LINK = "[click](https:evil.example)"
DATASET = "<img src=y onerror=alert(2)> [set](https:evil.example)"
RUN_NAME = "**loud** [run](https:evil.example)"
HOSTILE = (TAG, LINK)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small real data set whose first two identities are named TAG and LINK, in a folder named
    DATASET under a configured data root, and two runs, the first named RUN_NAME."""
    base = tmp_path_factory.mktemp("hostile").resolve()
    data = make_mini_dataset(base / "roots" / DATASET)
    for split in ("train", "dev"):
        people = sorted(p.name for p in (data / "cls_data" / split).iterdir())
        for old, new in zip(people, HOSTILE):
            shutil.move(data / "cls_data" / split / old, data / "cls_data" / split / new)
    labels = make_runs(base / "runs")
    (base / "runs" / "r0-ce" / "config.json").write_text(json.dumps({"name": RUN_NAME}))
    labels[0] = labels[0].replace("mini-ce", RUN_NAME)
    patch = pytest.MonkeyPatch()
    patch.setenv(config.DATA_ROOTS_ENV, str(base / "roots"))
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": str(data), "labels": labels}
    patch.undo()


def _page(name: str, world) -> AppTest:
    app = AppTest.from_file(str(config.PROJECT_ROOT / "views" / name), default_timeout=240)
    app.session_state["facelab.data_root"] = world["data"]
    return app


def _markdown_shown(app: AppTest) -> str:
    """Every text the page renders as markdown: markdown, captions, alerts, headings, metric
    labels, widget help, image captions."""
    texts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "title",
                                  "header", "subheader") for e in getattr(app, kind)]
    texts += [m.label for m in app.metric]
    texts += [caption or "" for image in app.image for caption in image.captions]
    return "\n".join(texts)


def _plotly_strings(app: AppTest) -> str:
    """Every string inside the page's plotly figures (names, hover text, titles, annotations)."""
    found: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for chart in app.get("plotly_chart"):
        walk(json.loads(chart.proto.spec))
    return "\n".join(found)


def _assert_plain_markdown(shown: str, *names: str) -> None:
    assert "<img" not in shown and "](https:evil.example)" not in shown and "**loud**" not in shown
    for name in names:
        assert as_plain_markdown(name) in shown, name


def _assert_plain_plotly(shown: str, *names: str) -> None:
    assert "<img" not in shown and "<b>" not in shown
    for name in names:
        assert as_plain_html(name) in shown, name


def test_the_escapes_leave_nothing_live():
    assert as_plain_markdown(TAG) == r"&lt;img src\=x onerror\=alert\(1\)&gt;"
    assert as_plain_markdown(LINK) == r"\[click\]\(https\:evil\.example\)"
    assert as_plain_html("<b>A & B</b>") == "&lt;b&gt;A &amp; B&lt;/b&gt;"


def test_embeddings_legend_hover_and_labels_show_names_as_text(world):
    app = _page("embeddings.py", world)
    app.session_state["embeddings.method"] = "pca"  # UMAP's first compile costs a minute of CPU
    app.run()
    app.multiselect(key="embeddings.checkpoints").set_value(world["labels"]).run()
    assert not app.exception, [e.message for e in app.exception]
    legend = next(m.value for m in app.markdown if m.proto.allow_html)
    _assert_plain_markdown(legend, *HOSTILE)
    _assert_plain_markdown(_markdown_shown(app), *HOSTILE, world["labels"][0])
    figures = _plotly_strings(app)
    _assert_plain_plotly(figures, TAG, world["labels"][0])
    assert LINK in figures  # markdown means nothing to plotly: shown as it is


def test_home_shows_the_data_set_and_identity_names_as_text(world):
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=120)
    app.session_state["facelab.data_root"] = world["data"]
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.sidebar.selectbox[0].value == world["data"]  # the data set really is in use
    _assert_plain_markdown(_markdown_shown(app), DATASET, *HOSTILE)


def test_augment_shows_the_data_set_and_identity_names_as_text(world):
    app = _page("augment.py", world).run()
    app.radio(key="augment.pick").set_value("one identity").run()
    app.selectbox(key="augment.identity").set_value(TAG).run()
    assert not app.exception, [e.message for e in app.exception]
    _assert_plain_markdown(_markdown_shown(app), DATASET, TAG)


def test_saliency_shows_identity_and_run_names_as_text(world):
    app = _page("saliency.py", world).run()
    app.multiselect(key="saliency.checkpoints").set_value(world["labels"][:1]).run()
    people = app.selectbox(key="saliency.person")
    people.select_index(people.options.index(TAG)).run()  # options show names; the values are class numbers
    assert not app.exception, [e.message for e in app.exception]
    shown = _markdown_shown(app) + "\n" + app.selectbox(key="saliency.stage").help
    _assert_plain_markdown(shown, TAG, world["labels"][0])


def test_inspect_shows_identity_names_as_text(world):
    app = _page("inspect.py", world).run()
    app.selectbox(key="inspect.which").set_value(world["labels"][0]).run()
    app.toggle(key="inspect.embed").set_value(True).run()
    assert not app.exception, [e.message for e in app.exception]
    _assert_plain_markdown(_markdown_shown(app), TAG)
    _assert_plain_plotly(_plotly_strings(app), TAG)
