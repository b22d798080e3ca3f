"""`python -m lib profile NAME_OR_SPEC_JSON`: parameters and MACs per stage.

Prints a table (stem, stages, head, total), or with --json
{"params", "macs", "stages": [{"name", "params", "macs", "out_shape"}, ...]}
where "stages" lists the stem, each stage and the head (the rows add up to the totals).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from lib.model.profile import Profile, human, profile, shape_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_SPEC_JSON",
                        help="a preset name (e.g. resnet18, face_resnet), a spec JSON file, or spec JSON text")
    parser.add_argument("--input-size", type=int, help="image height = width in pixels (overrides the spec)")
    parser.add_argument("--num-classes", type=int, help="number of identities (overrides the spec)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def load_spec(args: argparse.Namespace):
    """The spec named on the command line, with --input-size / --num-classes applied."""
    from lib.model.presets import resolve_spec
    spec = resolve_spec(args.model)
    if getattr(args, "input_size", None) is not None:
        spec = replace(spec, input_size=args.input_size)
    if getattr(args, "num_classes", None) is not None:
        spec = replace(spec, num_classes=args.num_classes)
    return spec.validate()


def run(args: argparse.Namespace) -> int:
    try:
        result = profile(load_spec(args))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
    return 0


def format_table(result: Profile) -> str:
    spec = result.spec
    header = f"{'part':<8} {'block':<18} {'depth':>5} {'output':>12} {'parameters':>14} {'MACs':>16} {'act. memory':>12}"
    lines = [f"{spec.name}: {spec.in_chs}x{spec.input_size}x{spec.input_size} input, {spec.num_classes} classes",
             "", header, "-" * len(header)]
    for part in result.parts():
        block = getattr(part, "spec", None)
        kind, depth = (block.block, str(block.depth)) if block else (part.kind, "")
        lines.append(f"{part.name:<8} {kind:<18} {depth:>5} {shape_text(part.out_shape):>12} "
                     f"{part.params:>14,} {part.macs:>16,} {human(part.activations * 4, 'B'):>12}")
    lines += ["-" * len(header),
              f"{'total':<8} {'':<18} {'':>5} {'':>12} {result.params:>14,} {result.macs:>16,} "
              f"{human(result.activation_bytes, 'B'):>12}",
              "", f"{human(result.params)} parameters, {human(result.macs)} MACs per image "
              "(multiply-accumulates of conv and linear layers; 1 MAC = 2 FLOPs).",
              "Activation memory: float32 values the layers write for one image in a forward pass."]
    return "\n".join(lines)
