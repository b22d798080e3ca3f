"""`python -m lib inspect MODEL [--data DIR] [--input-size N] [--model-code F:Class] [--model-args JSON]
[--layer NAME] [--json]`: open a HW2P2 model made outside FaceLab and say what it is.

MODEL is a state dict (.pth/.pt/.bin, or the course notebook's checkpoint dict), a
.safetensors file of such weights, or an ONNX export. Prints the architecture recognised,
where the embedding is taken, parameters and MACs per top-level block, the 35M-parameter
budget verdict, and with --data the verification metrics on the data set's pairs (and dev
accuracy when the model's classes are the data set's identities). Exit code 0, or 2 when the
model or the data set cannot be used.
"""
from __future__ import annotations

import json
import sys

import torch


def add_foreign_arguments(parser) -> None:
    """The options that say how to open a model made outside FaceLab (inspect and evaluate share them)."""
    parser.add_argument("--model-code", metavar="FILE.py:Class",
                        help="build the model with its own code (runs that file), then load MODEL's weights")
    parser.add_argument("--model-args", metavar="JSON", help="the class's constructor arguments as a JSON object, "
                        "e.g. '{\"num_classes\": 430}' (default: none)")
    parser.add_argument("--layer", metavar="NAME", help="take the embedding from this layer's output, pooled "
                        "(default: the input of the last Linear layer, or 'feats' of a dict output)")
    parser.add_argument("--input-size", type=int, metavar="N",
                        help="image side in pixels (default: the data set's, else 112)")
    parser.add_argument("--mean", type=float, nargs=3, metavar="M", help="normalization mean per channel the model "
                        "was trained with (default: 0.5 0.5 0.5, the course notebook's)")
    parser.add_argument("--std", type=float, nargs=3, metavar="S", help="normalization std (default: 0.5 0.5 0.5)")


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a .pth/.pt/.bin state dict, a .safetensors or an .onnx file")
    parser.add_argument("--data", metavar="DIR", help="data set folder: verification metrics on its pairs")
    parser.add_argument("--pairs", metavar="FILE", default="val_pairs.txt", help="pairs file inside DIR")
    add_foreign_arguments(parser)
    parser.add_argument("--flip", action="store_true", help="add the mirrored face's embedding")
    parser.add_argument("--layers", action="store_true", help="also list every layer's parameters and MACs")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def progress(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


def open_for_command(args, data_size: int | None):
    """(OpenedModel, input size) from the shared options; ValueError when it cannot be opened."""
    from lib.store.foreign_open import DEFAULT_INPUT_SIZE, open_model_file
    from lib.store.model_code import parse_model_args
    if args.input_size is not None and not 8 <= args.input_size <= 1024:
        raise ValueError(f"--input-size must be 8..1024 pixels, got {args.input_size}")
    size = args.input_size or data_size or DEFAULT_INPUT_SIZE
    opened = open_model_file(args.model, model_code=args.model_code, model_args=parse_model_args(args.model_args),
                             layer=args.layer, input_size=size, progress=progress)
    return opened, size


def normalization(args) -> tuple[tuple, tuple]:
    from lib.eval.foreign_eval import COURSE_MEAN, COURSE_STD
    return tuple(args.mean or COURSE_MEAN), tuple(args.std or COURSE_STD)


def data_image_size(args) -> int | None:
    if not args.data:
        return None
    from lib.data.pairs import load_pairs
    progress(f"reading the pairs of {args.data}")
    return int(load_pairs(args.data, args.pairs).images.shape[-1])


def inspect_model(args) -> dict:
    from lib.model.module_profile import profile_module
    opened, size = open_for_command(args, data_image_size(args))
    net = opened.net
    progress("counting parameters and MACs")
    counted = profile_module(net.model, size)
    with torch.no_grad():
        embedding_dim = int(net.embed(torch.zeros(1, 3, size, size)).shape[1])
    result = {"model": opened.name, "kind": opened.kind, "description": opened.description,
              "num_classes": net.num_classes, "embedding": net.embedding_source, "embedding_dim": embedding_dim,
              "notes": opened.notes, "profile": counted.to_dict(), "budget_verdict": counted.budget_verdict()}
    if args.data:
        from lib.base.device import resolve_device
        from lib.eval.foreign_eval import evaluate_foreign
        mean, std = normalization(args)
        report = evaluate_foreign(net, args.data, args.pairs, mean, std, flip=args.flip,
                                  device=resolve_device(args.device), progress=progress)
        result["data"] = {"root": str(report.data_root), "pairs": report.pairs_file, "metrics": report.metrics,
                          "notes": report.notes}
    return result


def format_result(result: dict, show_layers: bool = False) -> str:
    from lib.model.profile import human
    counted = result["profile"]
    lines = [f"Model:      {result['model']} ({result['kind']})",
             f"Recognised: {result['description']}",
             f"Classes:    {result['num_classes']}",
             f"Embedding:  {result['embedding_dim']} values, {result['embedding']}"]
    lines += [f"Note: {note}" for note in result["notes"]]
    size = counted["input_size"]
    lines += ["", f"Parameters and MACs for one 3x{size}x{size} image (1 MAC = 2 FLOPs):",
              f"  {'block':<24} {'kind':<18} {'params':>12} {'MACs':>9}  output"]
    lines += [table_row(row) for row in counted["blocks"]]
    lines += [f"  {'total':<24} {'':<18} {counted['params']:>12,} {human(counted['macs']):>9}",
              f"Budget: {result['budget_verdict']}"]
    if show_layers:
        lines += ["", "Layers:", *(table_row(row) for row in counted["layers"])]
    if "data" in result:
        lines += ["", *verification_lines(result["data"])]
    return "\n".join(lines)


def table_row(row: dict) -> str:
    from lib.model.profile import human
    shape = "x".join(str(value) for value in row["out_shape"])
    return f"  {row['name'][:24]:<24} {row['kind'][:18]:<18} {row['params']:>12,} {human(row['macs']):>9}  {shape}"


def verification_lines(data: dict) -> list[str]:
    m = data["metrics"]
    lines = [f"Data set:   {data['root']} (pairs: {data['pairs']})"]
    if "dev_top1" in m:
        lines += [f"  dev top-1           {m['dev_top1']:.4f}", f"  dev top-5           {m['dev_top5']:.4f}"]
    lines += [f"  verification AUC    {m['auc']:.4f}",
              f"  EER                 {m['eer']:.4f}",
              f"  TPR at FPR 1e-2     {m['tpr_at_fpr_1e-2']:.4f}",
              f"  TPR at FPR 1e-3     {m['tpr_at_fpr_1e-3']:.4f}",
              f"  best accuracy       {m['best_accuracy']:.4f} (threshold {m['best_threshold']:.3f})",
              f"  k-fold accuracy     {m['kfold_mean']:.4f} +- {m['kfold_std']:.4f}"]
    return lines + [f"Note: {note}" for note in data["notes"]]


def run(args) -> int:
    try:
        result = inspect_model(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_result(result, args.layers))
    return 0


def evaluate_model_file(args) -> int:
    """`python -m lib evaluate MODEL_FILE --data DIR ...`: the verification part of inspect."""
    if not args.data:
        print("error: a model file carries no data set: pass --data DIR", file=sys.stderr)
        return 2
    args.pairs = args.pairs or "val_pairs.txt"
    args.model = args.checkpoint  # evaluate names its positional argument after FaceLab's checkpoint folders
    try:
        from lib.base.device import resolve_device
        from lib.eval.foreign_eval import evaluate_foreign
        opened, _ = open_for_command(args, data_image_size(args))
        mean, std = normalization(args)
        report = evaluate_foreign(opened.net, args.data, args.pairs, mean, std, flip=args.flip,
                                  device=resolve_device(args.device), progress=progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = {"root": str(report.data_root), "pairs": report.pairs_file, "metrics": report.metrics,
            "notes": report.notes}
    if args.json:
        print(json.dumps({"model": opened.name, "description": opened.description, "data": str(report.data_root),
                          "pairs": report.pairs_file, "flip": args.flip, "metrics": report.metrics,
                          "notes": opened.notes + report.notes}, indent=2))
    else:
        print("\n".join([f"Model:      {opened.name} ({opened.description})", *verification_lines(data)]))
    return 0
