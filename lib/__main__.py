"""`python -m lib COMMAND ...`: FaceLab's headless command line.

Each command lives in lib/commands/<module>.py and offers
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code: 0 success,
1 the work found problems, 2 bad input). Modules are imported only when their
command runs, so `python -m lib profile` never pays for importing UMAP.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "profile": ("lib.commands.profile", "parameters and MACs per stage of a preset or spec JSON"),
    "export-code": ("lib.commands.export_code", "standalone PyTorch source for a preset or spec JSON"),
    "data-check": ("lib.commands.data_check", "check a data set in the HW2P2 layout"),
    "train": ("lib.commands.train", "run one training job from a run JSON"),
    "evaluate": ("lib.commands.evaluate", "dev accuracy and verification metrics of a checkpoint (or a model file)"),
    "inspect": ("lib.commands.inspect", "open a HW2P2 model made outside FaceLab (.pth, .safetensors, .onnx)"),
    "submit": ("lib.commands.submit", "the competition's submission CSV of a checkpoint (test pairs or test images)"),
    "retrieval": ("lib.commands.retrieval", "gallery and probes: rank-1 identification and open-set rejection"),
    "scheduler": ("lib.commands.scheduler", "start queued jobs and reap finished ones (make run starts it)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description="FaceLab command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        parser.print_help(sys.stderr if argv else sys.stdout)
        return 2 if argv else 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    command_parser = argparse.ArgumentParser(prog=f"python -m lib {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(command_parser)
    try:
        args = command_parser.parse_args(argv[1:])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
