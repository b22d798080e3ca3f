"""How a run uses its hardware: the precision ("auto" follows the hardware, and what ran is recorded),
torch.compile, and where batches are augmented."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from lib.base import device
from lib.store.run_folder import RunFolder
from lib.train.engine import Trainer, train
from tests.train_cases import tiny_config


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="needs lscpu to read the CPU flags another way")
def test_cpu_flags_are_the_ones_lscpu_reports():
    listed = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    flags_line = next((line for line in listed.splitlines() if line.startswith("Flags:")), None)
    if flags_line is None:
        pytest.skip("lscpu lists no flags here")
    assert device.cpu_flags() == frozenset(flags_line.partition(":")[2].split())


@pytest.mark.parametrize("flags, expected", [({"avx2", "amx_bf16", "amx_tile"}, "bf16"), ({"avx2", "avx512f"}, "fp32")])
def test_auto_on_a_cpu_is_bf16_only_with_amx_bf16_units(monkeypatch, flags, expected):
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    assert device.resolve_precision("auto", "cpu") == (expected, "")


def test_explicit_precisions_on_a_cpu(monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    assert device.resolve_precision("fp32", "cpu") == ("fp32", "")
    precision, problem = device.resolve_precision("fp16", "cpu")
    assert precision == "fp32" and "fp16 needs a GPU" in problem
    precision, problem = device.resolve_precision("bf16", "cpu")
    assert precision == "bf16" and "emulated" in problem and "auto or fp32" in problem
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert device.resolve_precision("bf16", "cpu") == ("bf16", "")


def test_a_run_records_the_precision_it_trained_in_and_autocasts_in_it(tmp_path):
    expected, _ = device.resolve_precision("auto", "cpu")
    trainer = Trainer(tiny_config(epochs=1, device="cpu"), tmp_path / "probe")
    assert trainer.config.precision == "auto" and trainer.precision == expected
    seen = []
    hook = trainer.model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer.run()
    hook.remove()
    assert seen and seen[0] == (torch.bfloat16 if expected == "bf16" else torch.float32)
    # Evaluation runs outside autocast: its forward passes are fp32 whatever the training precision.
    assert seen[-1] == torch.float32
    assert RunFolder(tmp_path / "probe").read_metrics()[0]["precision"] == expected


def test_forced_bf16_trains_in_bf16_and_reaches_the_end(tmp_path):
    summary = train(tiny_config(epochs=1, precision="bf16", device="cpu"), tmp_path)
    assert summary["status"] == "done"
    assert RunFolder(tmp_path).read_metrics()[0]["precision"] == "bf16"


def test_compile_is_on_for_gpus_only_unless_asked():
    assert device.compile_pays("auto", "cuda") and not device.compile_pays("auto", "cpu")
    assert device.compile_pays("on", "cpu") and not device.compile_pays("off", "cuda")


def test_a_compiled_step_trains_the_same_weights_as_an_eager_one(tmp_path):
    """torch.compile asked for on the CPU: the compiled forward is what the steps run, and two steps
    give the weights the eager steps give (fp32 both, so only operation order differs)."""
    weights = {}
    for mode in ("off", "on"):
        trainer = Trainer(tiny_config(epochs=1, precision="fp32", compile_model=mode, device="cpu"), tmp_path / mode,
                          max_steps=2)
        assert (trainer.step_parts.forward is not None) == (mode == "on")
        assert trainer.run()["status"] == "stopped"
        weights[mode] = {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}
    for name, value in weights["off"].items():
        torch.testing.assert_close(weights["on"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def _weights_after(tmp_path, steps: int, **config) -> tuple[Trainer, dict]:
    trainer = Trainer(tiny_config(epochs=1, device="cpu", **config), tmp_path, max_steps=steps)
    assert trainer.run()["status"] == "stopped"
    return trainer, {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


def test_batches_augmented_on_the_device_train_exactly_as_batches_augmented_in_the_loader(tmp_path):
    """augment_on="device": the loader (here a worker process) hands over uint8 batches and the training
    process augments them with each batch's seed: the same pictures, so the same weights, bit for bit."""
    loader, in_loader = _weights_after(tmp_path / "loader", 3, augment_on="loader")
    device_side, on_device = _weights_after(tmp_path / "device", 3, augment_on="device", workers=1)
    assert loader.batches.augment_in_loader and not device_side.batches.augment_in_loader
    assert device_side.batches.batched is not None  # the default pipeline has a batched form
    for name, value in in_loader.items():
        assert torch.equal(on_device[name], value), name


def test_a_pipeline_without_a_batched_form_is_augmented_in_the_loader_with_a_warning(tmp_path):
    policy = [{"name": "TrivialAugmentWide", "params": {"num_magnitude_bins": 31}}]
    trainer = Trainer(tiny_config(epochs=1, device="cpu", augment=policy, augment_on="device"), tmp_path)
    assert trainer.batches.batched is None and trainer.batches.augment_in_loader
    assert any("no batched form" in warning for warning in trainer.warnings)
    # "auto" on a CPU keeps augmentation in the loader whatever the pipeline.
    assert Trainer(tiny_config(epochs=1, device="cpu"), tmp_path / "auto").batches.augment_in_loader
