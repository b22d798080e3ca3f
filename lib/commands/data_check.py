"""`python -m lib data-check ROOT [--json]`: what a data set holds and what is wrong with it.

Exit code 0 when the data set is usable (problems that were worked around,
such as a skipped corrupt image, are still listed), 1 when a problem makes it
unusable, 2 when ROOT is not a folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lib.data.report import DataReport, check_dataset


def add_arguments(parser) -> None:
    parser.add_argument("root", help="data set folder in the HW2P2 layout (cls_data/, ver_data/, val_pairs.txt), "
                                     "or verification only (ver_data/, val_pairs.txt)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def format_report(report: DataReport) -> str:
    per = report.images_per_class
    spread = f"   per identity: min {per['min']}, median {per['median']:g}, max {per['max']}" if per else ""
    sizes = ", ".join(f"{size}: {count:,}" for size, count in sorted(report.image_sizes.items())) or "none"
    test = "none" if report.test_pairs is None else f"{report.test_pairs:,} (unlabeled)"
    lines = [f"Data set: {report.root}", f"  layout              {report.layout}"]
    if not report.verification_only:
        lines += [
            f"  identities          {report.classes:>7,}",
            f"  train images        {report.train_images:>7,}{spread}",
            f"  dev images          {report.dev_images:>7,}",
        ]
    lines += [
        f"  verification images {report.ver_images:>7,}",
        f"  val pairs           {report.pairs:>7,}   {report.same_pairs:,} same, {report.different_pairs:,} different",
        f"  pair folds          {report.folds or 'none':>7}   "
        + ("(the file's fold column: the k-fold accuracy uses them)" if report.folds else "(10 interleaved folds)"),
        f"  test pairs          {test:>7}",
        f"  image sizes         {sizes}",
    ]
    if report.errors:
        lines.append(f"Problems ({len(report.errors)}):")
        lines += [f"  {'UNUSABLE ' if message in report.fatal else ''}- {message}" for message in report.errors]
    else:
        lines.append("No problems found.")
    lines.append("Usable: " + ("yes" if report.usable else "no (fix the problems marked UNUSABLE)"))
    return "\n".join(lines)


def run(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        print(f"data-check: {root} is not a folder", file=sys.stderr)
        return 2
    report = check_dataset(root)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.usable else 1
