"""`python -m lib evaluate CHECKPOINT_DIR [--data ROOT] [--pairs FILE] [--flip] [--json]`.

Prints dev identification accuracy (top-1, top-5) and verification ROC AUC,
EER, TPR at FPR 1e-2 / 1e-3 and the k-fold accuracy (over the pairs file's
fold column when it has one, else 10 folds) of a checkpoint, on the data set it
was trained on unless --data names another: any folder, in the HW2P2 layout or
verification only (ver_data/ + val_pairs.txt); the data roots restrict the browser,
not the terminal. Dev accuracy only where the checkpoint's classes are the data
set's identities; "scope" in the JSON says what the numbers mean (trained on another
data set, how many pair identities were in training). Exit code 0, or 2 when the checkpoint
or the data set cannot be used (a model over the host's limits, lib/model/limits.py, included).
AUC and EER come with 95% bootstrap intervals, and a TPR at an FPR the impostor pairs cannot
resolve says how many it needs ("resolution" in the JSON; lib/eval/confidence.py).
"""
from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    from lib.commands.inspect import add_foreign_arguments
    parser.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a checkpoint folder (meta.json + model.safetensors), "
                        "or a model made elsewhere: a .pth/.pt/.bin state dict, .safetensors or .onnx file (with --data)")
    parser.add_argument("--data", metavar="ROOT", help="data set folder, anywhere (default: the one in meta.json)")
    parser.add_argument("--pairs", metavar="FILE", help="pairs file inside ROOT (default: val_pairs.txt)")
    parser.add_argument("--flip", action="store_true", help="add the mirrored face's embedding (test-time augmentation)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_foreign_arguments(parser)


def _interval_text(metrics: dict, name: str) -> str:
    """The bootstrap interval as " (95% interval LOW - HIGH)" when it was computed, else nothing."""
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    return f" (95% interval {low:.4f} - {high:.4f})" if low is not None and high is not None else ""


def _tpr_text(metrics: dict, key: str) -> str:
    """The TPR, or what the pairs lack to resolve it (lib.eval.confidence states the rule)."""
    from lib.eval.metrics import resolution
    needs = resolution(metrics)["tpr_needs_impostor_pairs"].get(key)
    return f"{metrics[key]:.4f}" if needs is None else f"needs >= {needs:,} impostor pairs"


def format_report(report, scope) -> str:
    m = report.metrics
    lines = [f"Checkpoint: {report.folder}",
             f"Data set:   {report.data_root} (pairs: {report.pairs_file})"]
    if "dev_top1" in m:  # closed-set numbers only where the checkpoint's classes are the data set's
        lines += [f"  dev top-1           {m['dev_top1']:.4f}",
                  f"  dev top-5           {m['dev_top5']:.4f}"]
    lines += [f"  verification AUC    {m['auc']:.4f}{_interval_text(m, 'auc')}",
             f"  EER                 {m['eer']:.4f}{_interval_text(m, 'eer')}",
             f"  TPR at FPR 1e-2     {_tpr_text(m, 'tpr_at_fpr_1e-2')}",
             f"  TPR at FPR 1e-3     {_tpr_text(m, 'tpr_at_fpr_1e-3')}",
             f"  best accuracy       {m['best_accuracy']:.4f} (threshold {m['best_threshold']:.3f})",
             f"  k-fold accuracy     {m['kfold_mean']:.4f} +- {m['kfold_std']:.4f}"]
    lines += [f"Note: {note}" for note in scope.notes()]
    return "\n".join(lines)


def run(args) -> int:
    from pathlib import Path
    if Path(args.checkpoint).is_file() or args.model_code:  # a model made outside FaceLab
        from lib.commands.inspect import evaluate_model_file
        return evaluate_model_file(args)
    from lib.base.device import resolve_device
    from lib.explore.scope import checkpoint_scope, score_on
    from lib.model.limits import check_explorable
    from lib.store.meta import read_meta
    from lib.train.evaluation import evaluate_checkpoint
    try:
        check_explorable(read_meta(args.checkpoint).spec)  # over the host's limits: refused before it is built
        if args.data is None:  # the data set it was trained on, with its training subset: its own numbers
            report = evaluate_checkpoint(args.checkpoint, None, args.pairs, flip=args.flip,
                                         device=resolve_device(args.device))
            scope = checkpoint_scope(args.checkpoint, report.data_root, report.pairs_file)
        else:  # any folder the user names: the data roots restrict the browser, not the terminal
            report = score_on(args.checkpoint, args.data, args.pairs, flip=args.flip,
                              device=resolve_device(args.device))
            scope = report.scope
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        from lib.eval.metrics import resolution
        print(json.dumps({"checkpoint": str(report.folder), "data": str(report.data_root),
                          "pairs": report.pairs_file, "flip": args.flip, "metrics": report.metrics,
                          "trained_metrics": report.trained_metrics, "scope": scope.to_dict(),
                          "resolution": resolution(report.metrics)}, indent=2))
    else:
        print(format_report(report, scope))
    return 0
