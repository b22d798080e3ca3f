"""ForeignNet: any image classifier made outside FaceLab, with the interface of FaceLab's FaceNet.

Explore, evaluation and saliency call ``embed(x)``, ``embed_and_classify(x)``,
``forward(x)`` (logits), ``classifier`` and ``num_classes``. A foreign model has none of
these, so they are read off its forward pass:

- the embedding is, by default, the input of the model's last ``nn.Linear`` (the
  penultimate features every torchvision classifier and the course's networks have),
  captured by a forward hook; a model whose forward returns ``{"feats": ..., "out": ...}``
  (the course notebook's) gives its ``feats``; or the user names a layer, whose output
  is average-pooled over space when it is a feature map, and flattened;
- the logits are the model's own output (its ``"out"`` entry for such a dict);
- ``classifier`` is that last Linear, so class scores can be computed from embeddings
  (from the default embedding, its input; a layer named by the user may have another width).
"""
from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lib.model.zoo import last_linear_name

_SEEN = threading.local()  # {id(ForeignNet): {"classifier": (input, output), "layer": output}} per thread


class ForeignNet(nn.Module):
    def __init__(self, model: nn.Module, description: str, layer: str | None = None):
        super().__init__()
        self.model = model
        self.description = description
        self.classifier_name = last_linear_name(model)
        self.layer = layer or None
        self.returns_feats = False  # known after the first forward: the output is a dict with "feats"
        self._spatial: dict[int, list[str]] = {}    # input size -> names of blocks that output feature maps
        self._shapes: dict[int, dict[str, tuple]] = {}
        if self.layer is not None:
            modules = dict(model.named_modules())
            if self.layer not in modules or not self.layer:
                raise ValueError(unknown_layer_message(self.layer, list(modules)))
            modules[self.layer].register_forward_hook(self._remember_layer)
        if self.classifier_name:
            self.classifier.register_forward_hook(self._remember_classifier)
        # Opened for inference: a wrapper left in training mode would put its model back into
        # training mode (BatchNorm on batch statistics) whenever a caller restores "the mode it had".
        self.eval()

    # ------------------------------------------------------------------ what the model is

    @property
    def classifier(self) -> nn.Linear | None:
        """The last nn.Linear of the model (None when it has none)."""
        return self.model.get_submodule(self.classifier_name) if self.classifier_name else None

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features if self.classifier is not None else 0

    @property
    def embedding_source(self) -> str:
        """Where the embedding comes from, in words."""
        if self.layer:
            return f"the output of layer {self.layer!r}, pooled and flattened"
        if self.returns_feats or not self.classifier_name:
            return "the 'feats' entry of the model's output"
        return f"the input of the last Linear layer {self.classifier_name!r}"

    # ------------------------------------------------------------------ hooks

    def _seen(self) -> dict:
        """What the hooks saw in this thread's forward pass of this model (page sessions share models)."""
        return _SEEN.__dict__.setdefault(id(self), {})

    def _remember_classifier(self, module, inputs, output) -> None:
        self._seen()["classifier"] = (inputs[0], output)

    def _remember_layer(self, module, inputs, output) -> None:
        self._seen()["layer"] = output

    # ------------------------------------------------------------------ the FaceNet interface

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [N, D], logits [N, classes]) from one forward pass."""
        self._seen().clear()
        try:
            output = self.model(x)
            seen = dict(self._seen())
        finally:
            _SEEN.__dict__.pop(id(self), None)  # never keep a batch's tensors alive
        seen_classifier, seen_layer = seen.get("classifier"), seen.get("layer")
        return self._embedding(output, seen_classifier, seen_layer), self._logits(output, seen_classifier)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_and_classify(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_and_classify(x)[1]

    def _embedding(self, output, seen_classifier, seen_layer) -> torch.Tensor:
        if self.layer:
            if seen_layer is None or not isinstance(seen_layer, torch.Tensor):
                raise ValueError(f"layer {self.layer!r} did not produce a tensor in the forward pass; "
                                 "name a layer the model calls")
            return pooled(seen_layer)
        if isinstance(output, Mapping) and isinstance(output.get("feats"), torch.Tensor):
            self.returns_feats = True
            return pooled(output["feats"])
        if seen_classifier is None:
            raise ValueError("the model's forward never called a Linear layer and returned no 'feats': name the "
                             "layer whose output is the embedding (--layer NAME)")
        return seen_classifier[0].flatten(1)

    def _logits(self, output, seen_classifier) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, Mapping) and isinstance(output.get("out"), torch.Tensor):
            return output["out"]
        if seen_classifier is not None:
            return seen_classifier[1]
        if isinstance(output, Sequence) and output and isinstance(output[-1], torch.Tensor):
            return output[-1]
        raise ValueError(f"the model returned {type(output).__name__}, not class scores: return a tensor of "
                         "logits or a dict with 'out'")

    def spatial_blocks(self, input_size: int) -> list[tuple[str, nn.Module, tuple[int, int, int]]]:
        """(name, module, output C x H x W) of each top-level block whose output is a feature map for
        ``input_size`` images (what GradCAM can look at), from one forward pass on a blank image."""
        if input_size not in self._spatial:
            shapes: dict[str, tuple] = {}
            hooks = [child.register_forward_hook(_shape_recorder(name, shapes))
                     for name, child in self.model.named_children()]
            device = next(self.model.parameters(), torch.empty(0)).device
            was_training = self.model.training
            try:
                with torch.no_grad():
                    self.model.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
            finally:
                self.model.train(was_training)
                for hook in hooks:
                    hook.remove()
            self._spatial[input_size] = [name for name, _ in self.model.named_children()  # a 1x1 map has no "where"
                                         if len(shapes.get(name, ())) == 3 and shapes[name][1] * shapes[name][2] > 1]
            self._shapes[input_size] = shapes
        children = dict(self.model.named_children())
        return [(name, children[name], self._shapes[input_size][name]) for name in self._spatial[input_size]]


def _shape_recorder(name: str, shapes: dict):
    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape[1:])
    return record


def pooled(values: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C] by average pooling over space; anything else flattened to [N, -1]."""
    if values.dim() == 4:
        return F.adaptive_avg_pool2d(values, 1).flatten(1)
    return values.flatten(1)


def unknown_layer_message(layer: str, names: list[str]) -> str:
    close = difflib.get_close_matches(layer, [name for name in names if name], n=5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return f"the model has no layer named {layer!r}{hint} (names as in model.named_modules(), e.g. 'layer4')"
