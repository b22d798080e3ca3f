"""Uploaded checkpoints: real files written by lib.checkpoint, real zips, real pickles."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save as save_safetensors

from lib.losses.registry import build_loss
from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.store import upload
from lib.store.checkpoint import save_checkpoint


def small_spec(width: int = 8):
    base = PRESETS["face_resnet"]
    stages = tuple(replace(s, out_chs=width * 2**i) for i, s in enumerate(base.stages))
    head = replace(base.head, embedding_dim=32)
    return replace(base, name="small", stem=replace(base.stem, out_chs=width), stages=stages, head=head,
                   num_classes=5)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = FaceNet(small_spec()).eval()
    loss = build_loss("arcface", 32, 5)
    run = tmp_path / "run"
    save_checkpoint(run / "best", model, {"loss": "arcface", "classes": list("abcde")}, loss_module=loss)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev_top1": 0.5}) + "\n"
                                       + json.dumps({"epoch": 2, "dev_top1": 0.7}) + "\n{cut short")
    return model, run


def _files(folder, *names):
    return [(name, (folder / name).read_bytes()) for name in names]


def _same_outputs(a, b):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_loose_files_rebuild_the_same_model(saved):
    model, run = saved
    loaded = upload.load_upload(_files(run / "best", "model.safetensors", "meta.json", "loss.safetensors"))
    assert _same_outputs(model, loaded.model)
    assert loaded.meta.loss == "arcface" and set(loaded.loss_state) == {"weight"}
    assert loaded.spec == model.spec


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zipped_run_prefers_best_and_reads_its_curves(saved, tmp_path):
    model, run = saved
    other = FaceNet(small_spec()).eval()
    save_checkpoint(run / "last", other, {"loss": "ce"})
    entries = {f"run/{p.relative_to(run)}": p.read_bytes() for p in run.rglob("*") if p.is_file()}
    loaded = upload.load_upload([("run.zip", _zip(entries))])
    assert _same_outputs(model, loaded.model) and not _same_outputs(other, loaded.model)
    assert [row["dev_top1"] for row in loaded.metrics_rows] == [0.5, 0.7]


def test_dataparallel_prefix_is_accepted(saved):
    model, run = saved
    prefixed = {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}
    files = [("model.safetensors", save_safetensors(prefixed)), ("meta.json", (run / "best/meta.json").read_bytes())]
    loaded = upload.load_upload(files)
    assert _same_outputs(model, loaded.model)
    assert any("DataParallel" in note for note in loaded.notes)


def test_corrupt_and_truncated_files_are_refused(saved):
    _, run = saved
    data = (run / "best/model.safetensors").read_bytes()
    meta = (run / "best/meta.json").read_bytes()
    with pytest.raises(ValueError, match="damaged|not a safetensors"):
        upload.load_upload([("model.safetensors", data[: len(data) // 2]), ("meta.json", meta)])
    with pytest.raises(ValueError, match="not a safetensors"):
        upload.load_upload([("model.safetensors", b"hello world, not tensors"), ("meta.json", meta)])
    with pytest.raises(ValueError, match="not valid JSON"):
        upload.load_upload([("model.safetensors", data), ("meta.json", b"{spec:")])
    with pytest.raises(ValueError, match="no model spec"):
        upload.load_upload([("model.safetensors", data), ("meta.json", b"{}")])
    with pytest.raises(ValueError, match="missing meta.json"):
        upload.load_upload([("model.safetensors", data)])
    with pytest.raises(ValueError, match="not a zip"):
        upload.load_upload([("run.zip", b"PK but not really")])


class _Trap:
    """Unpickling this creates a file: proof that a pickle was (or was not) executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("zipped", [True, False], ids=["torch.save", "legacy pickle"])
def test_a_pickle_named_safetensors_is_never_unpickled(saved, tmp_path, zipped):
    _, run = saved
    marker = tmp_path / "executed"
    buffer = io.BytesIO()
    if zipped:
        torch.save({"weights": _Trap(str(marker))}, buffer)
    else:
        pickle.dump({"weights": _Trap(str(marker))}, buffer, protocol=2)
    files = [("model.safetensors", buffer.getvalue()), ("meta.json", (run / "best/meta.json").read_bytes())]
    with pytest.raises(ValueError, match="pickled"):
        upload.load_upload(files)
    assert not marker.exists()
    with pytest.raises(ValueError, match="never loaded"):
        upload.load_upload([("model.pt", buffer.getvalue())])


def test_wrong_shapes_are_listed(saved):
    model, run = saved
    meta = json.loads((run / "best/meta.json").read_text())
    meta["spec"] = small_spec(width=4).to_dict()  # a narrower model than the weights
    with pytest.raises(ValueError, match="shape mismatches"):
        upload.load_upload(_files(run / "best", "model.safetensors") + [("meta.json", json.dumps(meta).encode())])
    meta["spec"] = small_spec(width=64).to_dict()  # far larger: refused before it is built
    with pytest.raises(ValueError, match="do not belong together"):
        upload.load_upload(_files(run / "best", "model.safetensors") + [("meta.json", json.dumps(meta).encode())])


@pytest.mark.parametrize("name", ["../evil/model.safetensors", "/etc/model.safetensors", "a/../../x.json"])
def test_zip_paths_outside_the_archive_are_refused(saved, name):
    _, run = saved
    entries = {"best/model.safetensors": (run / "best/model.safetensors").read_bytes(),
               "best/meta.json": (run / "best/meta.json").read_bytes(), name: b"x"}
    with pytest.raises(ValueError, match="inside the archive"):
        upload.load_upload([("run.zip", _zip(entries))])


def test_zip_links_bombs_and_oversized_files_are_refused(saved):
    _, run = saved
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("best/model.safetensors")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ValueError, match="links"):
        upload.load_upload([("run.zip", buffer.getvalue())])
    bomb = _zip({"best/meta.json": b"0" * (20 * 2**20)})
    with pytest.raises(ValueError, match="zip bomb"):
        upload.load_upload([("run.zip", bomb)])
    with pytest.raises(ValueError, match="over the 50 MB limit"):
        upload.load_upload([("model.safetensors", b"\0" * (upload.MAX_FILE_BYTES + 1))])
    many = _zip({f"f{i}.txt": b"x" for i in range(upload.MAX_MEMBERS + 1)}, zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match="members"):
        upload.load_upload([("run.zip", many)])


def test_a_zipped_torch_checkpoint_gets_a_safetensors_hint():
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    entries = {"run/best/model.pth": buffer.getvalue(), "run/best/meta.json": b"{}"}
    with pytest.raises(ValueError, match="pickled files"):
        upload.load_upload([("run.zip", _zip(entries))])


def test_an_uploaded_meta_with_a_bad_field_is_refused_naming_it(saved):
    _, run = saved
    meta = json.loads((run / "best/meta.json").read_text())
    meta["metrics"] = {"auc": float("nan")}
    weights = _files(run / "best", "model.safetensors")
    with pytest.raises(ValueError, match="meta.json: metrics.auc: nan is not a finite number"):
        upload.load_upload(weights + [("meta.json", json.dumps(meta).encode())])
    meta["metrics"], meta["classes"] = {"auc": 0.5}, "abcde"
    with pytest.raises(ValueError, match="meta.json: classes: 'abcde' is not a list of names"):
        upload.load_upload(weights + [("meta.json", json.dumps(meta).encode())])
