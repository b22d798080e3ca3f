"""Models made outside FaceLab: safe reading, architecture recognition, the FaceNet interface,
counting, ONNX, the model's own code, and the inspect/evaluate commands."""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from lib.__main__ import main
from lib.base.config import LOGIN_ENV, PARAMETER_BUDGET
from lib.model import zoo
from lib.model.module_profile import OTHER, profile_module
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec
from lib.store.foreign import read_weights_bytes, read_weights_file
from lib.store.foreign_open import open_model_bytes, open_model_file
from tests.foreign_cases import (
    COURSE_MODEL_CODE,
    SMALLEST,
    CodeTrap,
    penultimate,
    random_torchvision,
    save_course_checkpoint,
    save_state_dict,
    save_trap,
)
from tests.synthetic_data import make_dataset

SIZE = 32


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small forwards run fastest on one thread, above all on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- recognition

def test_every_listed_variant_is_recognised_with_its_number_of_classes():
    for index, name in enumerate(zoo.CANDIDATES):
        classes = 5 + 97 * index  # any number of classes, a different one for each variant
        with torch.device("meta"):
            model = zoo.build(name, classes, device="meta")
        recognition = zoo.recognise(model.state_dict())
        assert (recognition.recognised, recognition.name, recognition.num_classes) == (True, name, classes)
    assert set(zoo.FAMILIES) == {"ResNet", "ResNeXt", "Wide ResNet", "MobileNetV2", "MobileNetV3", "ConvNeXt",
                                 "EfficientNet", "RegNet"}
    assert len([n for n in zoo.CANDIDATES if n.startswith("regnet_")]) == 15  # every torchvision RegNet


def test_a_changed_head_is_not_recognised_and_the_message_says_what_to_do():
    model = torchvision.models.resnet18(num_classes=10)
    model.fc = torch.nn.Sequential(torch.nn.Linear(512, 128), torch.nn.Linear(128, 10))
    recognition = zoo.recognise(model.state_dict())
    assert not recognition.recognised and recognition.name == "resnet18"
    assert recognition.differences == 6  # fc.weight and fc.bias missing; fc.0.* and fc.1.* extra
    for word in ("ResNet", "ConvNeXt", "RegNet", "EfficientNet", "closest", "resnet18", "ONNX", "--model-code"):
        assert word in recognition.message


def test_a_facenet_state_dict_says_its_spec_is_in_meta_json():
    with torch.device("meta"):
        model = FaceNet(ModelSpec(num_classes=12))
    recognition = zoo.recognise(model.state_dict())
    assert not recognition.recognised and "meta.json" in recognition.message and recognition.num_classes == 12


# ----------------------------------------------------------------------------- reading safely

@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_with_a_code_trap_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "trap.marker"
    path = save_trap(tmp_path / "model.pth", marker, legacy)
    with pytest.raises(ValueError, match="refused.*posix.system"):
        open_model_file(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(CodeTrap(tmp_path / "proof.marker")))  # the trap is real: plain unpickling runs it
    assert (tmp_path / "proof.marker").exists()


def test_a_whole_pickled_model_is_refused_with_the_way_to_save_it(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3), tmp_path / "whole.pth")
    with pytest.raises(ValueError, match=r"torchvision.models.resnet.ResNet.*state_dict\(\)"):
        read_weights_file(tmp_path / "whole.pth")


def test_the_size_cap_refuses_a_file_before_reading_it(tmp_path):
    path = save_state_dict(torchvision.models.resnet18(num_classes=3), tmp_path / "model.pth")
    with pytest.raises(ValueError, match="over the 1 MiB limit"):
        read_weights_file(path, limit=2**20)
    huge = tmp_path / "huge.pth"
    with open(huge, "wb") as handle:
        handle.truncate(3 * 2**29)  # 1.5 GiB, sparse: reading it would take seconds and the memory
    with pytest.raises(ValueError, match="1536.0 MiB is over the 1024 MiB limit"):
        open_model_file(huge)
    with pytest.raises(ValueError, match="neither a PyTorch file"):
        read_weights_bytes("notes.pth", b"hello, not weights")


@pytest.mark.parametrize("wrap", ["", "module.", "_orig_mod."])
def test_course_checkpoint_dicts_with_wrapper_prefixes(tmp_path, wrap):
    model = random_torchvision("resnet18", 9)
    path = save_course_checkpoint(model, tmp_path / "checkpoint.pth", wrap)
    weights = read_weights_file(path)
    assert weights.extras == {"epoch": 12, "metric": 0.91}
    assert weights.tensors.keys() == model.state_dict().keys()
    assert any("model_state_dict" in note for note in weights.notes)
    assert any(wrap in note for note in weights.notes) if wrap else len(weights.notes) == 1


def test_safetensors_weights_without_meta_json(tmp_path):
    model = random_torchvision("mobilenet_v3_small", 6)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    opened = open_model_file(tmp_path / "model.safetensors")
    assert opened.recognition.name == "mobilenet_v3_small" and opened.net.num_classes == 6
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(opened.net(x), model(x), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the FaceNet interface

@pytest.mark.parametrize("name", SMALLEST)
def test_embedding_is_torchvision_s_penultimate_features(tmp_path, name):
    model = random_torchvision(name, 11)
    data = io.BytesIO()
    torch.save(model.state_dict(), data)  # as the student saves it
    opened = open_model_bytes(f"{name}.pth", data.getvalue())
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected_embedding, expected_logits = penultimate(model)(x), model(x)
        embedding, logits = opened.net.embed_and_classify(x)
        torch.testing.assert_close(embedding, expected_embedding, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(opened.net.classifier(embedding), expected_logits, atol=1e-5, rtol=0)
    assert opened.net.num_classes == 11 and name in opened.description


def test_a_named_layer_gives_its_pooled_output_and_an_unknown_one_is_refused(tmp_path):
    model = random_torchvision("resnet18", 4)
    path = save_state_dict(model, tmp_path / "model.pth")
    x = torch.randn(2, 3, SIZE, SIZE)
    net = open_model_file(path, layer="layer3").net
    trunk = torch.nn.Sequential(*list(model.children())[:7])  # conv1 ... layer3
    with torch.no_grad():
        torch.testing.assert_close(net.embed(x), trunk(x).mean(dim=(2, 3)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no layer named 'layer5'.*layer4"):
        open_model_file(path, layer="layer5")


def test_saliency_gradients_flow_to_the_pixels(tmp_path):
    model = random_torchvision("resnet18", 4)
    net = open_model_file(save_state_dict(model, tmp_path / "model.pth")).net
    pixels = torch.rand(1, 3, SIZE, SIZE, requires_grad=True)
    F.normalize(net.embed(pixels), dim=1).sum().backward()
    reference = pixels.detach().clone().requires_grad_(True)
    F.normalize(penultimate(model)(reference), dim=1).sum().backward()
    torch.testing.assert_close(pixels.grad, reference.grad, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- counting

def test_counts_equal_flop_counter_and_torchvision_parameters():
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    counted = profile_module(model, 224)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    assert counted.params == 11_689_512 and counted.macs == counter.get_total_flops() // 2
    assert round(counted.macs / 1e9, 3) == 1.814  # DESIGN.md's reference
    assert sum(b.params for b in counted.blocks) == counted.params and sum(b.macs for b in counted.blocks) == counted.macs
    assert OTHER not in [b.name for b in counted.blocks]
    assert [b.name for b in counted.blocks][-2:] == ["avgpool", "fc"] and counted.blocks[-1].out_shape == (1000,)
    conv1 = next(layer for layer in counted.layers if layer.name == "conv1")
    assert (conv1.params, conv1.macs) == (64 * 3 * 49, 64 * 3 * 49 * 112 * 112)
    assert "within" in counted.budget_verdict()


def test_the_budget_verdict_of_a_model_over_35m_parameters():
    with torch.device("meta"):
        model = torchvision.models.wide_resnet50_2()
    counted = profile_module(model, 64)
    assert counted.params == 68_883_240 > PARAMETER_BUDGET and "OVER" in counted.budget_verdict()


# ----------------------------------------------------------------------------- ONNX

@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_exports_become_differentiable_modules(tmp_path, dynamo):
    from tests.foreign_cases import CourseNetwork
    model = CourseNetwork(5).eval()
    path = tmp_path / "model.onnx"
    options = ({"dynamic_shapes": {"x": {0: torch.export.Dim("batch")}}} if dynamo
               else {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}})
    torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), path, dynamo=dynamo, external_data=False, **options)
    opened = open_model_file(path, input_size=SIZE)
    x = torch.randn(4, 3, SIZE, SIZE, requires_grad=True)
    embedding, logits = opened.net.embed_and_classify(x)
    expected = model(x)
    torch.testing.assert_close(embedding, expected["feats"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, expected["out"], atol=1e-5, rtol=1e-5)
    embedding.sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    model(reference)["feats"].sum().backward()
    torch.testing.assert_close(x.grad, reference.grad, atol=1e-5, rtol=1e-4)
    assert opened.kind == "onnx" and opened.net.num_classes == 5


def test_onnx_weights_beside_the_graph_are_read_from_the_same_folder_only(tmp_path):
    import onnx

    from tests.foreign_cases import CourseNetwork
    model = CourseNetwork(3).eval()
    torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), tmp_path / "one.onnx", dynamo=False,
                      external_data=False)
    graph = onnx.load(tmp_path / "one.onnx")
    onnx.save_model(graph, tmp_path / "split.onnx", save_as_external_data=True, location="split.onnx.data",
                    size_threshold=0)
    x = torch.randn(1, 3, SIZE, SIZE)
    torch.testing.assert_close(open_model_file(tmp_path / "split.onnx", input_size=SIZE).net(x), model(x)["out"],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="separate file.*external_data=False"):
        open_model_bytes("split.onnx", (tmp_path / "split.onnx").read_bytes())


# ----------------------------------------------------------------------------- the model's own code

def test_model_code_with_arguments_and_its_dict_output(tmp_path):
    from tests.foreign_cases import CourseNetwork
    (tmp_path / "model.py").write_text(COURSE_MODEL_CODE)
    reference = CourseNetwork(13).eval()
    path = save_course_checkpoint(reference, tmp_path / "checkpoint.pth", "module.")
    opened = open_model_file(path, model_code=f"{tmp_path / 'model.py'}:Network", model_args={"num_classes": 13})
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(opened.net.embed(x), reference(x)["feats"], atol=1e-6, rtol=0)
        torch.testing.assert_close(opened.net(x), reference(x)["out"], atol=1e-6, rtol=0)
    assert opened.kind == "code" and opened.net.num_classes == 13 and "feats" in opened.net.embedding_source
    with pytest.raises(ValueError, match="cls_layer.weight"):  # default num_classes=7: shapes differ
        open_model_file(path, model_code=f"{tmp_path / 'model.py'}:Network")


def test_model_code_is_refused_and_never_runs_when_sign_in_is_on(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text(COURSE_MODEL_CODE)
    path = save_state_dict(torchvision.models.resnet18(num_classes=2), tmp_path / "model.pth")
    monkeypatch.setenv(LOGIN_ENV, "1")
    with pytest.raises(ValueError, match="shared.*own Python code"):
        open_model_file(path, model_code=f"{tmp_path / 'model.py'}:Network")
    assert not (tmp_path / "imported.marker").exists()


# ----------------------------------------------------------------------------- commands

@pytest.fixture
def faces(tmp_path):
    """Three identities, six verification images, five labeled pairs, 32x32 pixels."""
    pairs = "".join(f"ver_data/v{a}.png ver_data/v{b}.png {label}\n"
                    for a, b, label in ((0, 1, 1), (2, 3, 0), (4, 5, 1), (0, 2, 0), (1, 5, 0)))
    make_dataset(tmp_path / "faces", {"ann": 2, "bob": 2, "cy": 2}, {"ann": 1, "bob": 1, "cy": 1}, ver=6,
                 size=SIZE, pairs=pairs)
    return tmp_path / "faces"


def independent_auc(model, root) -> float:
    """AUC from torchvision's penultimate features and scikit-learn, normalized like the course (0.5, 0.5)."""
    from PIL import Image
    lines = [line.split() for line in (root / "val_pairs.txt").read_text().splitlines()]
    features = penultimate(model)

    def embedding(name):
        pixels = torch.from_numpy(np.array(Image.open(root / name).convert("RGB"))).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            return F.normalize(features(((pixels - 0.5) / 0.5)[None]), dim=1)[0]

    scores = [float(embedding(a) @ embedding(b)) for a, b, _ in lines]
    return roc_auc_score([int(label) for _, _, label in lines], scores)


def test_inspect_prints_blocks_budget_and_metrics_of_the_data_set(tmp_path, faces, capsys):
    model = random_torchvision("resnet18", 3, seed=4)
    path = save_course_checkpoint(model, tmp_path / "checkpoint.pth", "module.")
    assert main(["inspect", str(path), "--data", str(faces), "--json"]) == 0
    captured = capsys.readouterr()
    assert "recognising the architecture" in captured.err  # progress goes to stderr
    result = json.loads(captured.out)
    assert result["description"] == "torchvision resnet18 (ResNet) with 3 classes" and result["embedding_dim"] == 512
    assert result["profile"]["params"] == sum(p.numel() for p in model.parameters())
    assert result["profile"]["input_size"] == SIZE and result["profile"]["within_budget"] is True
    metrics = result["data"]["metrics"]
    assert metrics["auc"] == pytest.approx(independent_auc(model, faces), abs=1e-6)
    assert "dev_top1" in metrics  # 3 classes, 3 identities
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    for words in ("Recognised: torchvision resnet18", "layer4", "Budget:", "1 MAC = 2 FLOPs", "module."):
        assert words in text


def test_evaluate_accepts_a_model_file(tmp_path, faces, capsys):
    model = random_torchvision("mobilenet_v3_small", 5, seed=2)
    path = save_state_dict(model, tmp_path / "model.pth")
    assert main(["evaluate", str(path), "--data", str(faces), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["auc"] == pytest.approx(independent_auc(model, faces), abs=1e-6)
    assert "dev_top1" not in result["metrics"] and any("5 classes" in note for note in result["notes"])
    assert main(["evaluate", str(path)]) == 2
    assert "--data" in capsys.readouterr().err


def test_inspect_reports_a_refused_file_without_a_traceback(tmp_path, capsys):
    path = save_trap(tmp_path / "model.pth", tmp_path / "marker")
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err and not (tmp_path / "marker").exists()


def test_an_onnx_export_with_a_fixed_batch_is_refused_on_opening_with_the_fix(tmp_path):
    from tests.foreign_cases import CourseNetwork
    torch.onnx.export(CourseNetwork(3).eval(), (torch.randn(1, 3, SIZE, SIZE),), tmp_path / "fixed.onnx",
                      dynamo=True, external_data=False)
    with pytest.raises(ValueError, match="dynamic batch dimension.*dynamic_shapes"):
        open_model_file(tmp_path / "fixed.onnx", input_size=SIZE)
