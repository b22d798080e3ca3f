"""`python -m lib retrieval CHECKPOINT [--data DIR] [--threshold T ...] [--known-share F] [--seed N] [--json]`.

The recitation's retrieval protocol on the verification images of DIR (default: the
embedded data): a gallery of one image per known identity, probes of the known identities'
other images and of identities left out of the gallery. Prints rank-1 identification
accuracy of the known probes, and at each threshold the detection-and-identification rate
(DIR) and the false accept rate (FAR) of the unknown ones; without --threshold, at the
thresholds that let 10% and 1% of the unknown probes through. Exit code 0, or 2 on bad input.
"""
from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint folder (meta.json + model.safetensors)")
    parser.add_argument("--data", metavar="DIR", help="data set folder with ver_data/ and val_pairs.txt "
                                                      "(default: the embedded LFW-64)")
    parser.add_argument("--threshold", type=float, action="append", default=[], metavar="T",
                        help="cosine threshold to accept a probe as its nearest identity (repeatable)")
    parser.add_argument("--known-share", type=float, default=0.5, metavar="F",
                        help="share of the identities with two or more images put in the gallery (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="which identities are known (default 0)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def format_report(report) -> str:
    lines = [f"  gallery (known identities)  {report.gallery_size:>6,}",
             f"  known probes                {report.known_probes:>6,}",
             f"  unknown probes              {report.unknown_probes:>6,}",
             f"  rank-1 accuracy (known)     {report.rank1:.4f}",
             "  threshold   DIR (known accepted and named right)   FAR (unknown accepted)"]
    lines += [f"  {rate['threshold']:9.4f}   {rate['dir']:.4f}{'':33}{rate['far']:.4f}" for rate in report.rates]
    return "\n".join(lines)


def run(args) -> int:
    from dataclasses import asdict

    from lib.base import config
    from lib.explore.models import open_model
    from lib.explore.retrieval import model_retrieval
    data = args.data or str(config.EMBEDDED_DATA)
    try:
        report = model_retrieval(open_model(args.checkpoint), data, args.threshold, known_share=args.known_share,
                                 seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "data": data, **asdict(report)}, indent=2))
    else:
        print(f"Checkpoint: {args.checkpoint}\nData set:   {data} (verification images)\n" + format_report(report))
    return 0
