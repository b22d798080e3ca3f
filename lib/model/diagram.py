"""Block drawings as Graphviz DOT text, the way the slides draw networks.

``network_dot`` draws stem -> stages -> head from the profile (shapes and counts
are the Build page's own numbers). ``block_dot`` draws one block from the graph
of the real module (lib/model/tracing.py), so a skip connection appears exactly
where the code adds it and a drawing cannot disagree with the model. The page
renders the text with ``st.graphviz_chart`` (Graphviz compiled to WebAssembly in
the browser: nothing to install on the host, and DOT is plain text a test can read).
"""
from __future__ import annotations

from torch import nn

from lib.model.blocks import BLOCK_TITLES, DropPath, LayerNorm2d, SqueezeExcite
from lib.model.net import build_stage
from lib.model.profile import Profile, human, shape_text
from lib.model.spec import ModelSpec, stage_in_chs, stage_output_sizes
from lib.model.tracing import layer_graph

_FILL = {"conv": "#dbe9f6", "norm": "#fde9c9", "act": "#e3f1dc", "join": "#f3d9e7", "other": "#eeeeee"}


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def _node(name: str, label: str, kind: str, shape: str = "box") -> str:
    return (f"  {_quoted(name)} [label={_quoted(label)}, shape={shape}, style=\"rounded,filled\", "
            f"fillcolor=\"{_FILL[kind]}\"];")


def _graph(lines: list[str], title: str) -> str:
    header = ["digraph {", "  rankdir=TB; nodesep=0.25; ranksep=0.3;",
              "  node [fontname=\"Helvetica\", fontsize=11]; edge [arrowsize=0.6];",
              f"  labelloc=t; label={_quoted(title)};"]
    return "\n".join(header + lines + ["}"])


def network_dot(profile: Profile) -> str:
    """Input -> stem -> one node per stage (block x depth, output shape, params, MACs) -> head."""
    spec = profile.spec
    lines = [_node("input", f"input\n{shape_text((spec.in_chs, spec.input_size, spec.input_size))}", "other",
                   "ellipse")]
    previous = "input"
    for part in profile.parts():
        if part is profile.stem:
            kind, title = "conv", f"stem ({spec.stem.kind}, {spec.stem.kernel_size}x{spec.stem.kernel_size}"
            title += f" /{spec.stem.stride})" + (" + max-pool" if spec.stem.pool else "")
        elif part is profile.head:
            kind, title = "other", "head: pool" + (" -> embedding" if spec.head.embedding_dim else "") + " -> classifier"
        else:
            kind = "join"
            title = f"{part.name}: {BLOCK_TITLES[part.spec.block]} x{part.spec.depth}"
            title += f", stride {part.spec.stride}" if part.spec.stride != 1 else ""
        label = f"{title}\nout {shape_text(part.out_shape)}\n{human(part.params)} params, {human(part.macs)} MACs"
        lines += [_node(part.name, label, kind), f"  {_quoted(previous)} -> {_quoted(part.name)};"]
        previous = part.name
    return _graph(lines, f"{spec.name}: {human(profile.params)} parameters, {human(profile.macs)} MACs per image")


def _layer_label(module: nn.Module) -> tuple[str, str]:
    """(text, colour kind) for one drawn layer."""
    if isinstance(module, nn.Conv2d):
        k, s = module.kernel_size[0], module.stride[0]
        depthwise = module.groups == module.in_channels and module.groups > 1
        grouped = f", groups {module.groups}" if module.groups > 1 and not depthwise else ""
        text = f"{'depthwise ' if depthwise else ''}{k}x{k} conv{' /' + str(s) if s != 1 else ''}"
        return f"{text}{grouped}\n{module.in_channels} -> {module.out_channels}", "conv"
    if isinstance(module, nn.Linear):
        return f"linear\n{module.in_features} -> {module.out_features}", "conv"
    if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, LayerNorm2d, nn.LayerNorm)):
        names = {nn.BatchNorm2d: "BatchNorm", LayerNorm2d: "LayerNorm", nn.LayerNorm: "LayerNorm",
                 nn.GroupNorm: "GroupNorm", nn.InstanceNorm2d: "InstanceNorm"}
        return names[type(module)], "norm"
    if isinstance(module, SqueezeExcite):
        return "squeeze-excite\n(channel gate)", "other"
    if isinstance(module, nn.MaxPool2d):
        return f"{module.kernel_size}x{module.kernel_size} max-pool /{module.stride}", "other"
    return type(module).__name__, "act"


def block_dot(module: nn.Module, title: str, input_shape: tuple[int, int, int] | None = None) -> str:
    """One node per layer of ``module`` in the order it runs; additions drawn as (+), products as (x).
    ``input_shape`` (C, H, W) of one image: by default the first layer's channels at 32x32."""
    nodes, _ = layer_graph(module, input_shape or (_in_channels(module), 32, 32))
    shown: dict[str, str] = {}  # node -> the drawn node standing for it (identities are not drawn)
    lines: list[str] = []
    for node in nodes:
        sources = list(dict.fromkeys(shown[name] for name in node.inputs if name in shown))
        if node.kind == "input":
            lines.append(_node("in", "x", "other", "ellipse"))
            shown[node.name] = "in"
            continue
        if node.kind == "output":
            lines += [_node("out", "out", "other", "ellipse")] + [f"  {_quoted(s)} -> \"out\";" for s in sources]
            continue
        if node.kind == "layer" and isinstance(node.module, (nn.Identity, DropPath)):
            shown[node.name] = sources[0] if sources else "in"  # identities at inference are not drawn
            continue
        if node.kind == "layer":
            label, kind = _layer_label(node.module)
            lines.append(_node(node.name, label, kind))
        else:
            label = "+" if node.kind == "add" else ("x layer scale" if node.scaled else "x")
            lines.append(_node(node.name, label, "join", "circle" if len(label) == 1 else "box"))
        shown[node.name] = node.name
        lines += [f"  {_quoted(s)} -> {_quoted(node.name)};" for s in sources]
    return _graph(lines, title)


def _in_channels(module: nn.Module) -> int:
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def stage_block_dot(spec: ModelSpec, index: int) -> str:
    """The first block of stage ``index`` (the one with the stride), drawn from a freshly built module."""
    stage = spec.stages[index]
    module = build_stage(stage, stage_in_chs(spec)[index], [0.0] * stage.depth)[0]
    size = stage_output_sizes(spec)[index]  # the map the block takes in
    return block_dot(module, f"stage{index + 1}, first block: {BLOCK_TITLES[stage.block]}",
                     (stage_in_chs(spec)[index], size, size))
