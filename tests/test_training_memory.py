"""Training memory of a batch: the meta-device count against a real step on the CPU."""
import pytest
import torch

from lib.model.memory import saved_activation_bytes, training_memory
from lib.model.net import FaceNet
from lib.model.presets import PRESETS


def real_saved_bytes(spec, batch_size: int) -> int:
    """Distinct storages autograd keeps for backward in a real CPU forward, weights excluded."""
    torch.manual_seed(0)
    model = FaceNet(spec).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in weights:
            storages[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(batch_size, spec.in_chs, spec.input_size, spec.input_size))
    return sum(storages.values())


@pytest.mark.parametrize("name", ["face_resnet", "face_convnext", "face_mobilenet"])
def test_meta_count_equals_a_real_forward(name):
    spec = PRESETS[name]
    assert training_memory(spec, 4).activations == real_saved_bytes(spec, 4)


def test_activations_grow_with_the_batch():
    spec = PRESETS["face_resnet"]
    with torch.device("meta"):
        model = FaceNet(spec)
    sizes = {b: saved_activation_bytes(model, b, 3, 64) for b in (2, 4, 8)}
    assert sizes[8] - sizes[4] == 2 * (sizes[4] - sizes[2]) > 0  # linear in the batch (BN keeps a little per channel)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("sgd", 0.0), ("adamw", 0.0)])
def test_optimizer_state_equals_what_torch_keeps(optimizer, momentum):
    spec = PRESETS["face_mobilenet"]
    model = FaceNet(spec)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.1)}[optimizer]
    step = make(model.parameters())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    step.step()
    kept = sum(value.numel() * value.element_size() for state in step.state.values()
               for value in state.values() if torch.is_tensor(value) and value.dim() > 0)
    counted = training_memory(spec, 2, optimizer, momentum)
    assert counted.optimizer_state == kept
    assert counted.gradients == counted.weights == sum(p.numel() * 4 for p in model.parameters())


def test_an_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optimizer: 'lamb'"):
        training_memory(PRESETS["face_resnet"], 2, "lamb")
