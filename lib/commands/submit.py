"""`python -m lib submit CHECKPOINT --data DIR --out FILE.csv [--task verification|classification]`.

Writes the course competition's submission for a checkpoint: the cosine similarity of every
pair of DIR/test_pairs.txt in file order (verification), or the predicted identity of every
image of DIR/cls_data/test (classification), as a CSV with the header ``ID,Label``.
Progress goes to stderr, so the file can also be written to stdout (``--out -``).
Exit code 0, or 2 when the checkpoint or the data set cannot be used.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint folder (meta.json + model.safetensors)")
    parser.add_argument("--data", metavar="DIR", required=True,
                        help="data set folder holding test_pairs.txt (and cls_data/test/ for classification)")
    parser.add_argument("--out", metavar="FILE.csv", required=True, help="where to write the CSV ('-': stdout)")
    parser.add_argument("--task", choices=("verification", "classification"), default="verification",
                        help="verification: scores of the test pairs (default); classification: identities "
                             "of the test images")


def _progress(fraction: float) -> None:
    print(f"\rembedding the test images: {fraction:4.0%}", end="" if fraction < 1 else "\n", file=sys.stderr)


def run(args) -> int:
    from lib.base.files import atomic_write_text
    from lib.explore.models import open_model
    from lib.explore.submission import submission_csv
    try:
        model = open_model(args.checkpoint)
        print(f"checkpoint {args.checkpoint}, data set {args.data}, task {args.task}", file=sys.stderr)
        text = submission_csv(model, args.data, args.task, _progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(text)
    else:
        try:
            atomic_write_text(Path(args.out), text)
        except OSError as err:
            print(f"error: cannot write {args.out} ({err.strerror})", file=sys.stderr)
            return 2
        print(f"wrote {text.count(chr(10)) - 1:,} rows to {args.out}", file=sys.stderr)
    return 0
