"""`python -m lib export-code NAME_OR_SPEC_JSON`: print the model as standalone PyTorch source."""
from __future__ import annotations

import argparse
import sys

from lib.commands.profile import load_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_SPEC_JSON",
                        help="a preset name (e.g. resnet18, face_resnet), a spec JSON file, or spec JSON text")
    parser.add_argument("--input-size", type=int, help="image height = width in pixels (overrides the spec)")
    parser.add_argument("--num-classes", type=int, help="number of identities (overrides the spec)")


def run(args: argparse.Namespace) -> int:
    from lib.model.codegen import to_source
    try:
        source = to_source(load_spec(args))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(source)
    return 0
