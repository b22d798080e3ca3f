"""`python -m lib evaluate CHECKPOINT_DIR [--data ROOT] [--pairs FILE] [--flip] [--json]`.

Prints dev identification accuracy (top-1, top-5) and verification ROC AUC,
EER, TPR at FPR 1e-2 / 1e-3 and the k-fold accuracy (over the pairs file's
fold column when it has one, else 10 folds) of a checkpoint, on the data set it
was trained on unless --data names another. Exit code 0, or 2 when the checkpoint
or the data set cannot be used.
"""
from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a checkpoint folder (meta.json + model.safetensors)")
    parser.add_argument("--data", metavar="ROOT", help="data set folder (default: the one in meta.json)")
    parser.add_argument("--pairs", metavar="FILE", help="pairs file inside ROOT (default: val_pairs.txt)")
    parser.add_argument("--flip", action="store_true", help="add the mirrored face's embedding (test-time augmentation)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def format_report(report) -> str:
    m = report.metrics
    lines = [f"Checkpoint: {report.folder}",
             f"Data set:   {report.data_root} (pairs: {report.pairs_file})",
             f"  dev top-1           {m['dev_top1']:.4f}",
             f"  dev top-5           {m['dev_top5']:.4f}",
             f"  verification AUC    {m['auc']:.4f}",
             f"  EER                 {m['eer']:.4f}",
             f"  TPR at FPR 1e-2     {m['tpr_at_fpr_1e-2']:.4f}",
             f"  TPR at FPR 1e-3     {m['tpr_at_fpr_1e-3']:.4f}",
             f"  best accuracy       {m['best_accuracy']:.4f} (threshold {m['best_threshold']:.3f})",
             f"  k-fold accuracy     {m['kfold_mean']:.4f} +- {m['kfold_std']:.4f}"]
    return "\n".join(lines)


def run(args) -> int:
    from lib.base.device import resolve_device
    from lib.train.evaluation import evaluate_checkpoint
    try:
        report = evaluate_checkpoint(args.checkpoint, args.data, args.pairs, flip=args.flip,
                                     device=resolve_device(args.device))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"checkpoint": str(report.folder), "data": str(report.data_root),
                          "pairs": report.pairs_file, "flip": args.flip, "metrics": report.metrics,
                          "trained_metrics": report.trained_metrics}, indent=2))
    else:
        print(format_report(report))
    return 0
