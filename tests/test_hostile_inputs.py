"""Whatever a user pastes or uploads, FaceLab either accepts it or refuses it with a ValueError.

The pages show a ValueError's message (st.error) and nothing else: any other exception reaches
the user as a traceback with the server's paths. Each property below feeds one entry point
arbitrary or mutated input and allows exactly two outcomes: a valid result, or a ValueError
whose message is short and names no server path. Examples are derandomized, so a failure
here fails the same way on every machine.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors

from lib.base.json_text import MAX_DEPTH
from lib.data import augment
from lib.data.datasets import list_identities, parse_pairs_text
from lib.data.transforms import TRANSFORMS
from lib.model.presets import PRESETS
from lib.model.spec import ModelSpec
from lib.store import upload
from lib.store.meta import CheckpointMeta, meta_from_json, meta_text

ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE = 2000  # characters: a refusal is read on a page, not scrolled through


def hostile(max_examples: int):
    """Settings for one property: a fixed example sequence (CI reruns it exactly), no deadline
    (the CI machine is shared), and no example database, so no earlier failure changes a run."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(call, *args):
    """``call(*args)``, or None when it refused with a ValueError that explains itself. Any other
    exception propagates and fails the test: that is the traceback a page would show."""
    try:
        return call(*args)
    except ValueError as err:
        message = str(err)
        assert message, "a refusal must say what is wrong"
        assert len(message) <= MAX_MESSAGE, f"a {len(message)}-character message: {message[:200]}..."
        assert str(ROOT) not in message, f"the message shows a server path: {message}"
        return None


def refused(call, *args) -> str:
    """The message of the ValueError ``call(*args)`` must raise."""
    with pytest.raises(ValueError) as caught:
        call(*args)
    message = str(caught.value)
    assert str(ROOT) not in message and len(message) <= MAX_MESSAGE
    return message


# ----------------------------------------------------------------------------- strategies

HUGE = [10**9, -10**9, 10**400, -10**400, 2**63, 1e308, -1e308, float("nan"), float("inf"), float("-inf")]
odd_numbers = st.one_of(st.integers(), st.integers(-10**400, 10**400), st.floats(), st.sampled_from(HUGE))
scalars = st.one_of(st.none(), st.booleans(), odd_numbers, st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=24)
# Values a careless edit puts in a field: wrong types, huge, negative, zero, empty, names of other fields.
wrong_values = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HUGE), st.integers(-10**6, 10**6),
    st.sampled_from([0, -1, 1, 2, 3, 2.5, -0.0, 1e-400, "", "3", "0.5", "relu", "basic", "layer", "conv", [], {}]),
    st.text(max_size=12), st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


def nested_text(depth: int, opener: str) -> str:
    """JSON text nesting ``depth`` arrays or objects: '[[[0]]]' or '{"a": {"a": {"a": 0}}}'."""
    closer = "]" if opener == "[" else "}"
    return (opener if opener == "[" else '{"a":') * depth + "0" + closer * depth


@st.composite
def mutated(draw, document: dict) -> dict:
    """``document`` (a JSON object) with one field somewhere inside it replaced, removed, or joined
    by a field it does not have."""
    document = json.loads(json.dumps(document))
    places = list(_places(document))
    container, key = draw(st.sampled_from(places))
    action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
    if action == "replace":
        container[key] = draw(wrong_values)
    elif action == "remove" and isinstance(container, dict):
        del container[key]
    elif action == "add" and isinstance(container, dict):
        container[draw(st.text(min_size=1, max_size=10))] = draw(wrong_values)
    return document


def _places(value):
    """(container, key) of every field and list item in ``value``, the nested ones too."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield value, key
        yield from _places(item)


# ----------------------------------------------------------------------------- model specs

def parsed_spec(text: str) -> ModelSpec:
    return ModelSpec.from_json(text).validate()


def assert_valid_spec(spec: ModelSpec) -> None:
    """Every field holds its declared type (torch takes no 3.0 channels), and the spec round-trips."""
    for part in (spec, spec.stem, spec.head, *spec.stages):
        for declared in dataclasses.fields(part):
            assert _has_type(getattr(part, declared.name), declared.type), (declared.name, getattr(part, declared.name))
    assert ModelSpec.from_json(spec.to_json()).validate() == spec


def _has_type(value, declared: str) -> bool:
    """``value`` fits a scalar annotation such as 'int', 'float | None' or 'str' (others pass)."""
    kinds = declared.split(" | ")
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    checks = {"int": lambda v: isinstance(v, int), "str": lambda v: isinstance(v, str),
              "float": lambda v: isinstance(v, (int, float)) and math.isfinite(v)}
    known = [kind for kind in kinds if kind in checks or kind == "bool"]
    return not known or any(checks[kind](value) for kind in known if kind in checks)


@hostile(200)
@given(json_values)
def test_any_json_is_a_valid_spec_or_a_value_error(value):
    spec = outcome(parsed_spec, json.dumps(value))
    if spec is not None:
        assert_valid_spec(spec)


@hostile(400)
@given(st.sampled_from(sorted(PRESETS)).flatmap(lambda name: mutated(PRESETS[name].to_dict())))
def test_a_mutated_preset_is_a_valid_spec_or_a_value_error(document):
    spec = outcome(parsed_spec, json.dumps(document))
    if spec is not None:
        assert_valid_spec(spec)


SIZE_FIELDS = [("input_size",), ("in_chs",), ("num_classes",), ("stem", "out_chs"), ("stem", "kernel_size"),
               ("stages", 0, "out_chs"), ("stages", 0, "depth"), ("head", "conv_chs"), ("head", "embedding_dim")]


@pytest.mark.parametrize("path", SIZE_FIELDS, ids=lambda path: ".".join(map(str, path)))
@pytest.mark.parametrize("size", [10**9, 10**400, -1, 0.5])
def test_a_size_that_would_exhaust_memory_is_refused_before_building(path, size):
    document = PRESETS["face_resnet"].to_dict()
    container = document
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = size
    assert path[-1] in refused(parsed_spec, json.dumps(document))


# ----------------------------------------------------------------------------- deep nesting

PARSERS = {"spec": parsed_spec, "pipeline": augment.pipeline_from_json, "meta.json": meta_from_json}


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
def test_json_nested_a_hundred_thousand_deep_is_refused_clearly(parser):
    message = refused(parser, "[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in message


@hostile(60)
@given(st.sampled_from(list(PARSERS)), st.integers(1, 5000), st.sampled_from(["[", "{"]))
def test_json_nested_at_any_depth_is_parsed_or_refused(parser, depth, opener):
    result = outcome(PARSERS[parser], nested_text(depth, opener))
    assert result is None or depth <= MAX_DEPTH


# ----------------------------------------------------------------------------- augmentation pipelines

def valid_param(param):
    """Values inside a registry parameter's declared range."""
    if param.kind == "int":
        numbers = st.integers(int(param.low), int(param.high))
        return numbers.filter(lambda n: n % 2 == 1) if param.odd else numbers
    if param.kind == "float":
        return st.floats(param.low, param.high)
    if param.kind == "choice":
        return st.sampled_from(param.choices)
    if param.kind == "range":
        return st.lists(st.floats(param.low, param.high), min_size=2, max_size=2).map(sorted)
    return st.one_of(st.none(), st.lists(st.floats(param.low, param.high), min_size=3, max_size=3))


@st.composite
def pipeline_steps(draw) -> dict:
    """One step: a registry transform (sometimes an unknown name), each parameter left out, in
    range, or given a wrong value; sometimes a key a step does not have."""
    name = draw(st.sampled_from(sorted(TRANSFORMS)) | st.text(max_size=10))
    specs = TRANSFORMS[name].params if name in TRANSFORMS else {}
    params = {}
    for key, param in specs.items():
        choice = draw(st.sampled_from(["absent", "valid", "valid", "wrong"]))
        if choice != "absent":
            params[key] = draw(valid_param(param) if choice == "valid" else wrong_values)
    step = {"name": name, "params": params}
    if draw(st.integers(0, 9)) == 0:
        step[draw(st.text(max_size=6))] = draw(wrong_values)
    return step


def assert_valid_pipeline(steps: list[dict]) -> None:
    assert augment.validate_pipeline(steps) == steps
    json.dumps(steps, allow_nan=False)  # every number finite: the pipeline is saved as JSON
    for step in steps:
        assert set(step["params"]) == set(TRANSFORMS[step["name"]].params)


@hostile(200)
@given(json_values)
def test_any_json_is_a_valid_pipeline_or_a_value_error(value):
    steps = outcome(augment.pipeline_from_json, json.dumps(value))
    if steps is not None:
        assert_valid_pipeline(steps)


@hostile(300)
@given(st.lists(pipeline_steps(), max_size=4))
def test_registry_steps_with_wrong_values_are_valid_or_a_value_error(steps):
    validated = outcome(augment.pipeline_from_json, json.dumps(steps))
    if validated is not None:
        assert_valid_pipeline(validated)
        if validated:  # v2.Compose refuses an empty list; the Augment page previews nothing then
            augment.build_pipeline(validated, stats=((0.5,) * 3, (0.25,) * 3))
        outcome(augment.check_runs, validated)  # as the Augment page does before showing previews


NORMALIZE_PARAMS = [
    {"mean": "0.5, 0.5, 0.5"}, {"std": "0.2"}, {"mean": ["a", "b", "c"]}, {"std": ["0.2", "0.2", "0.2"]},
    {"std": [0, 0, 0]}, {"std": 0}, {"std": [0.2, 0.2, 0.0]}, {"std": [1e-400, 0.2, 0.2]},
    {"std": [10**400, 0.2, 0.2]}, {"mean": [10**400] * 3}, {"std": [True, True, True]},
    {"std": [float("nan")] * 3}, {"mean": [0.5, 0.5]}, {"mean": {"r": 0.5}},
]


@pytest.mark.parametrize("params", NORMALIZE_PARAMS, ids=lambda params: json.dumps(params)[:40])
def test_normalize_with_text_or_zero_std_is_refused_naming_the_parameter(params):
    text = json.dumps([{"name": "Normalize", "params": params}])
    message = refused(augment.pipeline_from_json, text)
    assert "Normalize" in message and any(key in message for key in params)


def test_a_pipeline_longer_than_anyone_writes_is_refused():
    steps = [{"name": "RandomHorizontalFlip", "params": {}}] * (augment.MAX_STEPS + 1)
    assert "too long" in refused(augment.pipeline_from_json, json.dumps(steps))


# ----------------------------------------------------------------------------- meta.json

VALID_META = {"version": 2, "spec": PRESETS["face_resnet"].to_dict(), "classes": ["ann", "bob"],
              "metrics": {"dev_top1": 0.5, "val_auc": None, "note": "text"},
              "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}, "epoch": 3, "step": 40,
              "loss": "arcface", "name": "run", "wall_s": 12.5, "versions": {"torch": "2"},
              "config": {"augment": [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]},
              "machine": {"cpus": 2}, "extra_key": [1, 2]}


def assert_valid_meta(meta: CheckpointMeta) -> None:
    assert isinstance(meta, CheckpointMeta) and isinstance(meta.spec, ModelSpec)
    assert isinstance(meta_from_json(meta_text(meta)), CheckpointMeta)  # what publishing writes back


def test_the_valid_meta_is_accepted():
    assert_valid_meta(meta_from_json(json.dumps(VALID_META)))


@hostile(200)
@given(json_values)
def test_any_json_is_a_valid_meta_or_a_value_error(value):
    meta = outcome(meta_from_json, json.dumps(value))
    if meta is not None:
        assert_valid_meta(meta)


@hostile(400)
@given(mutated(VALID_META))
def test_a_mutated_meta_is_valid_or_a_value_error(document):
    meta = outcome(meta_from_json, json.dumps(document))
    if meta is not None:
        assert_valid_meta(meta)


@hostile(150)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_bytes_are_a_valid_meta_or_a_value_error(data):
    meta = outcome(meta_from_json, data)
    if meta is not None:
        assert_valid_meta(meta)


# ----------------------------------------------------------------------------- pairs files

pair_tokens = st.one_of(
    st.sampled_from(["ver_data/a.jpg", "ver_data/b.jpg", "0", "1", "2", "-1", "#", "#x", "07", "١", "²",
                     "99999999999999999999999", "9" * 5000, "\t", "\x00", "../../etc/passwd"]),
    st.text(max_size=12))
pair_lines = st.one_of(st.lists(pair_tokens, max_size=5).map(" ".join), st.text(max_size=40))


@hostile(300)
@given(st.lists(pair_lines, max_size=12).map("\n".join))
def test_any_pairs_text_gives_well_formed_pairs_and_short_problems(text):
    rows, problems = parse_pairs_text(text)  # a bad line is a problem listed, never an exception
    for row in rows:
        assert row.label in (-1, 0, 1) and 1 <= row.line
        assert (row.fold is None) == (rows[0].fold is None)
    folds = [row.fold for row in rows if row.fold is not None]
    torch.tensor(folds, dtype=torch.int64)  # what load_pairs makes of them
    for problem in problems:
        assert problem.startswith("line ") and int(problem.split(":")[0].split()[1]) >= 1  # load_pairs sorts by it
        assert len(problem) <= 300, problem[:200]


# ----------------------------------------------------------------------------- uploaded archives

def zipped(entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# A run folder's files as the loader expects them. The weights are too few for the spec, so a zip
# that survives every other check is still refused ("do not belong together") without building.
CHECKPOINT = {"run/best/meta.json": json.dumps(VALID_META).encode(),
              "run/best/model.safetensors": save_safetensors({"w": torch.zeros(4)}),
              "run/metrics.jsonl": b'{"epoch": 1, "dev_top1": 0.5}\n'}


def load_zip(data: bytes):
    return upload.load_upload([("run.zip", data)])


def test_the_checkpoint_zip_reaches_the_weights_check():
    assert "do not belong together" in refused(load_zip, zipped(CHECKPOINT))


def _with_bad_crc(entries: dict[str, bytes], member: str) -> bytes:
    """A stored zip of ``entries`` whose ``member`` has one data byte changed: its CRC no longer fits."""
    data = bytearray(zipped(entries))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(member)
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    data[start] ^= 0xFF
    return bytes(data)


def test_a_zip_with_a_bad_crc_is_refused_naming_the_member():
    message = refused(load_zip, _with_bad_crc(CHECKPOINT, "run/best/meta.json"))
    assert "meta.json" in message and "damaged" in message


@hostile(100)
@given(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]), st.integers(0, 10**6), st.integers(1, 255))
def test_a_zip_with_a_changed_byte_is_refused(compression, where, flip):
    data = bytearray(zipped(CHECKPOINT, compression))
    data[where % len(data)] ^= flip
    refused(load_zip, bytes(data))


@hostile(100)
@given(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]), st.integers(0, 10**6))
def test_a_truncated_zip_is_refused(compression, cut):
    data = zipped(CHECKPOINT, compression)
    refused(load_zip, data[:cut % len(data)])


@hostile(150)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: b"PK\x03\x04" + tail),
                 st.binary(max_size=300).map(lambda head: head + b"PK\x05\x06" + bytes(18))))
def test_random_bytes_named_zip_are_refused(data):
    refused(load_zip, data)


member_names = st.one_of(
    st.sampled_from(["../model.safetensors", "/etc/passwd", "a/../../x.json", "C:\\x", "..\\x", "best/meta.json",
                     "best/model.safetensors", "run/best/../../meta.json", "./meta.json", "best/", "//x"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30))


@hostile(100)
@given(st.lists(member_names, min_size=1, max_size=6, unique=True), st.binary(max_size=64))
def test_zips_with_any_member_names_are_refused_or_loaded(names, content):
    entries = {name: content for name in names}
    outcome(load_zip, zipped(entries, zipfile.ZIP_DEFLATED))


# ----------------------------------------------------------------------------- identity folder names

def _usable_folder_name(name: str) -> bool:
    return name not in (".", "..") and len(name.encode("utf-8")) <= 255


folder_names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"),
                       min_size=1, max_size=40).filter(_usable_folder_name)


@hostile(40)
@given(st.lists(folder_names, min_size=1, max_size=6, unique=True))
def test_identity_folders_with_any_names_are_listed(names):
    with tempfile.TemporaryDirectory() as folder:
        train = Path(folder) / "cls_data" / "train"
        for name in names:
            (train / name).mkdir(parents=True)
            (train / name / "0.jpg").write_bytes(b"")
        found = outcome(list_identities, train)
    assert found == sorted(name for name in names if not name.startswith("."))

