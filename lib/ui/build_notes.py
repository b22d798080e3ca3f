"""The Build page's teaching: what each block is, and items 1-13 of the curriculum,
each written around the live numbers of the model being built.

``concept_notes(result, stage_index, budget)`` returns {item number: markdown};
the page puts each note next to the number or picture it explains.
"""
from __future__ import annotations

from lib.model.profile import PartProfile, Profile, human
from lib.model.spec import ModelSpec
from lib.ui.build_view import has_shortcut

BLOCK_NOTES = {
    "conv": ("conv -> BatchNorm -> activation",
             "The plain VGG-style layer: no shortcut. A deep stack of them is hard to train, because "
             "the gradient has to pass through every layer on its way back."),
    "basic": ("3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, + input -> ReLU",
              "**4 · ResNet basic block.** Two 3x3 convolutions at full width, and a shortcut that adds the "
              "input back (a 1x1 conv + BN when the stride or width changes). ResNet-18 and -34 stack it."),
    "bottleneck": ("1x1 reduce -> 3x3 -> 1x1 expand, + input",
                   "**5 · Bottleneck.** A 1x1 conv shrinks the width to a quarter, the 3x3 works on that thin "
                   "map, a 1x1 widens it again. Much cheaper than two full-width 3x3s, so ResNet-50 can be deep."),
    "inverted_residual": ("1x1 expand (x6) -> 3x3 depthwise -> 1x1 project (no activation), + input",
                          "**7 · MobileNetV2 inverted residual.** The bottleneck turned inside out: expand the thin "
                          "input, filter each channel on its own (depthwise), project back down. The projection "
                          "has no activation (a *linear bottleneck*: ReLU on a thin map would destroy information) "
                          "and the shortcut joins the thin ends."),
    "convnext": ("7x7 depthwise -> LayerNorm -> 1x1 (x4) -> GELU -> 1x1, x layer scale, + input",
                 "**8 · ConvNeXt block.** Against MobileNetV2: a 7x7 instead of 3x3 kernel, spatial mixing "
                 "(depthwise) *before* channel mixing, expansion 4 instead of 6, LayerNorm instead of BatchNorm, "
                 "and one norm and one activation per block where MobileNetV2's has three BatchNorms and two "
                 "activations (one after the expansion, one after the depthwise conv; its projection is "
                 "linear). Downsampling is a separate 2x2, stride-2 conv. The course recommends BatchNorm for "
                 "this homework anyway: set these stages' norm to batch."),
    "dwsep": ("3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU",
              "**3 · Depthwise-separable (MobileNetV1).** First filter each of the M channels with its own KxK "
              "kernel (M·K² weights), then mix channels with a 1x1 conv (N·M): N·M + M·K² instead of N·M·K²."),
}


def layernorm_advice(spec: ModelSpec, how: str = "set **Norm** to batch in those stages below") -> str:
    """The course's advice where a model's blocks normalise with LayerNorm (ConvNeXt's choice): use
    BatchNorm for this homework; ``how`` says how to follow it where the advice is shown. '' when no
    stage uses LayerNorm."""
    stages = [str(index + 1) for index, stage in enumerate(spec.stages) if stage.block_options().get("norm") == "layer"]
    if not stages:
        return ""
    return (f":material/lightbulb: **The course recommends BatchNorm for this homework, ConvNeXt included.** "
            f"This model uses LayerNorm, the ConvNeXt paper's choice, in stage{'s' * (len(stages) > 1)} "
            f"{', '.join(stages)}. LayerNorm normalises each image on its own (transformers, tiny batches); "
            "BatchNorm normalises each channel over the batch, and HW2P2's batches are large enough for it. "
            f"To follow the advice, {how}.")


def concept_notes(result: Profile, stage_index: int, budget: int) -> dict[int, str]:
    """Items 1-13 for this model, about stage ``stage_index`` where an item is about one block."""
    block = result.stages[stage_index].blocks[0] if result.stages else None
    stage = result.stages[stage_index].spec if result.stages else None
    chs_in = block.in_shape[0] if block else result.stem.out_shape[0]
    chs_out = stage.out_chs if stage else chs_in
    kernel = (stage.block_options().get("kernel_size", 3) if stage else 3) or 3
    notes = {1: _conv_note(block or result.stem, result.stem), 9: _stem_note(result), 13: _budget_note(result, budget)}
    notes.update(_separable_notes(chs_in, chs_out, kernel))
    notes[6] = _residual_note(result)
    notes[10] = _se_note(chs_out)
    notes[11] = _groups_note(chs_out)
    notes[12] = _norm_note(chs_out)
    return notes


def _conv_note(part: PartProfile, stem: PartProfile) -> str:
    convs = [layer for layer in part.layers if layer.kind == "conv"] or [stem.layers[0]]
    layer = convs[0]
    positions = layer.out_shape[1] * layer.out_shape[2]
    return (f"**1 · Convolution cost.** A KxK conv from M to N channels holds N·M·K² weights. "
            f"`{layer.name}`: {layer.numbers} = **{layer.params:,}** parameters. It does those multiply-accumulates "
            f"at each of the {layer.out_shape[1]}x{layer.out_shape[2]} output positions: "
            f"{layer.macs // positions:,} x {positions:,} = **{layer.macs:,} MACs**.")


def _separable_notes(m: int, n: int, k: int) -> dict[int, str]:
    full, depthwise, pointwise = n * m * k * k, m * k * k, n * m
    return {
        2: (f"**2 · Depthwise and pointwise.** With groups = channels each channel gets its own KxK filter: "
            f"M·K² = {m}·{k}² = **{depthwise:,}** weights, but no mixing between channels. A 1x1 (pointwise) "
            f"conv only mixes channels: M·N = {m}·{n} = **{pointwise:,}**."),
        3: (f"**3 · Depthwise-separable.** Depthwise then pointwise: N·M + M·K² = {pointwise:,} + {depthwise:,} = "
            f"**{pointwise + depthwise:,}** weights, against N·M·K² = **{full:,}** for a full {k}x{k} conv from "
            f"{m} to {n} channels: **{full / (pointwise + depthwise):.1f}x** fewer (and as many times fewer MACs)."),
    }


def _residual_note(result: Profile) -> str:
    blocks = [block for stage in result.stages for block in stage.blocks]
    with_shortcut = sum(1 for block in blocks if has_shortcut(block.kind, block.in_shape[0], block.out_shape[0],
                                                               block.in_shape[1] // block.out_shape[1]))
    return (f"**6 · Residual connections.** A block with a shortcut computes y = x + F(x): the gradient flows "
            f"back through the + unchanged, so early layers still learn in a deep stack, and a block whose F "
            f"learns nothing is just the identity. This model: **{with_shortcut} of {len(blocks)}** blocks "
            f"have a shortcut.")


def _stem_note(result: Profile) -> str:
    size_in, size = result.spec.input_size, result.stem.out_shape[1]
    steps = [f"{stage.name}: {stage.in_shape[1]}->{stage.out_shape[1]} px, {stage.in_shape[0]}->{stage.out_shape[0]} ch"
             for stage in result.stages if stage.spec.stride == 2]
    return (f"**9 · Stem, stages, blocks.** The stem turns {size_in}x{size_in} pixels into a {size}x{size} map "
            f"(÷{size_in / size:.3g}; ResNet's stem divides by 4, 224 -> 56). Each stage is a run of identical "
            f"blocks; a stage that halves the size usually doubles the channels, so every stage costs about the same "
            f"MACs. Here: " + ("; ".join(steps) if steps else "no stage downsamples") + ".")


def _se_note(chs: int) -> str:
    squeezed = max(1, round(chs / 16))
    params = 2 * chs * squeezed + chs + squeezed
    return (f"**10 · Squeeze-and-excitation.** Average-pool each channel to one number, pass the C numbers "
            f"through a tiny 2-layer net, and rescale every channel by the sigmoid of its output. On C = {chs} "
            f"with ratio 1/16: 2·C·C/16 + C + C/16 = **{params:,}** parameters and only {2 * chs * squeezed:,} MACs "
            f"(it works on a 1x1 map).")


def _groups_note(chs: int) -> str:
    groups = 32 if chs % 32 == 0 and chs >= 32 else 4 if chs % 4 == 0 else 1
    full = chs * chs * 9
    return (f"**11 · ResNeXt groups.** A conv with g groups splits the channels into g independent convolutions: "
            f"(M/g)·N·K² weights. A 3x3 conv on C = {chs}: {full:,} weights; with g = {groups}: "
            f"**{full // groups:,}**. ResNeXt spends the saving on a wider 3x3 (32 groups of 4 channels in 32x4d).")


def _norm_note(chs: int) -> str:
    return (f"**12 · BatchNorm vs LayerNorm.** BatchNorm normalises each channel over the batch and keeps running "
            f"averages for evaluation; LayerNorm normalises each image over its channels, so it does not depend on "
            f"the batch (ConvNeXt, transformers). GroupNorm: groups of channels per image; InstanceNorm: each channel "
            f"per image. All learn a scale and a shift per channel: 2·C = **{2 * chs:,}** parameters at C = {chs}.")


def _budget_note(result: Profile, budget: int) -> str:
    share = 100 * result.params / budget
    verdict = "within" if result.params <= budget else "**over**"
    return (f"**13 · Budget, MACs and FLOPs.** {result.params:,} parameters: {share:.1f}% of the "
            f"{budget:,} budget ({verdict} it; the course allows 35M). One MAC is one multiply plus one add, "
            f"so {human(result.macs)} MACs = **{human(2 * result.macs)} FLOPs** per image. "
            f"Parameters decide memory and overfitting; MACs decide speed.")
