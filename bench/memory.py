"""Peak memory (RSS) of a training job and of the app's data path on a data set of any size.

Each figure is one fresh process's VmHWM (/proc/self/status: the most resident memory it
ever held, file pages it mapped included), so one measurement cannot inherit another's
memory or caches:

  train      ``python -m lib train RUN.json --max-steps N`` on the data set: load the splits
             and pairs, build the model, N optimizer steps, save the checkpoint.
  evaluate   (--evaluate) ``python -m lib evaluate`` of that checkpoint: every dev and
             verification image through the model, as a training epoch's evaluation does.
  data path  what the app does with a data set: load_split (train, dev), load_pairs, the data
             check, embedding a sample of verification images with a model, and the pixel
             fingerprint the Explore pages key embeddings by (a pass over every verification image).

A "cold" row is the first load of the set (decoding into the data cache, lib/data/cache.py);
"warm" rows read the cache back. With --baseline-lib (a copy of an older lib/, e.g.
``git archive HEAD lib | tar -x -C /tmp/old``) the data path also runs on that code,
alternating with the current one, so a change in the machine's load hits both alike. The
load average is printed beside every figure.

Usage: python bench/memory.py DATA [--steps 5] [--rounds 2] [--sample 512] [--evaluate] [--baseline-lib DIR]
       (DATA: a data set folder, e.g. one made by bench/make_large_set.py; its parent becomes
       a data root, and the data cache goes to DATA/../facelab-data-cache unless
       FACELAB_DATA_CACHE_DIR says otherwise)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter; prints one JSON line: VmHWM and what was done.
DATA_PATH = r"""
import json, sys, time
started = time.perf_counter()
from lib.data.datasets import load_pairs, load_split
from lib.data.report import check_dataset
root, sample = sys.argv[1], int(sys.argv[2])
train, dev = load_split(root, "train"), load_split(root, "dev")
pairs = load_pairs(root)
report = check_dataset(root)
import torch
from lib.eval.metrics import embed
from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.data.datasets import channel_stats
import dataclasses
spec = dataclasses.replace(PRESETS[sys.argv[3]], num_classes=len(train.classes))
model = FaceNet(spec).eval()
mean, std = channel_stats(root)
embeddings = embed(model, pairs.images[:sample], mean, std, 64, False, "cpu")
from lib.explore.models import images_fingerprint
fingerprint = images_fingerprint(pairs.images)  # what the Explore pages key embeddings by: every pixel read
done = {"train": len(train), "dev": len(dev), "pairs": len(pairs), "ver_images": report.ver_images,
        "embedded": int(embeddings.shape[0]), "usable": report.usable}
try:
    from lib.data.images import decode_count
    done["decoded"] = decode_count()
except ImportError:
    pass
status = open("/proc/self/status").read()
done["peak_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
done["seconds"] = time.perf_counter() - started
print(json.dumps(done))
"""

TRAIN = r"""
import json, sys, time
started = time.perf_counter()
from lib.__main__ import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(json.dumps({"exit": code, "peak_mib": int(status.split("VmHWM:")[1].split()[0]) / 1024,
                  "seconds": time.perf_counter() - started}))
"""


def load() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def run_child(code: str, args: list[str], lib_parent: Path, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter importing lib/ from ``lib_parent``; its last JSON line."""
    child_env = dict(env, PYTHONPATH=str(lib_parent))
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=lib_parent, env=child_env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def run_file(data: Path, folder: Path, steps: int) -> Path:
    """The quick CPU recipe on ``data`` at its image size, one epoch, no workers."""
    recipe = json.loads((PROJECT / "recipes" / "quick-cpu.json").read_text())
    recipe["name"] = "memory-bench"
    recipe["config"].update({"data_root": str(data), "epochs": 1, "workers": 0, "batch_size": 64})
    path = folder / "run.json"
    path.write_text(json.dumps(recipe))
    return path


def report_row(label: str, result: dict) -> None:
    extra = ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("peak_mib", "seconds"))
    print(f"{label:<28} peak RSS {result['peak_mib']:8.0f} MiB  {result['seconds']:7.1f} s  [{load()}]  ({extra})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample", type=int, default=512, help="verification images embedded by the data path")
    parser.add_argument("--preset", default="face_resnet", help="the model that embeds the sample")
    parser.add_argument("--evaluate", action="store_true",
                        help="also evaluate the trained checkpoint (every dev and verification image: minutes on a CPU)")
    parser.add_argument("--baseline-lib", type=Path, help="a folder holding an older lib/ to compare with")
    args = parser.parse_args()
    data = args.data.resolve()
    env = dict(os.environ, FACELAB_DATA_ROOTS=str(data.parent), OMP_WAIT_POLICY="PASSIVE")
    env.setdefault("FACELAB_DATA_CACHE_DIR", str(data.parent / "facelab-data-cache"))
    files = sum(1 for _ in data.rglob("*.jpg"))
    print(f"{data}: {files:,} images; data cache {env['FACELAB_DATA_CACHE_DIR']}  [{load()}]", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        recipe = run_file(data, Path(scratch), args.steps)
        for round_number in range(1, args.rounds + 1):
            data_args = [str(data), str(args.sample), args.preset]
            if args.baseline_lib:
                report_row(f"[{round_number}] data path, baseline",
                           run_child(DATA_PATH, data_args, args.baseline_lib.resolve(), env))
            report_row(f"[{round_number}] data path", run_child(DATA_PATH, data_args, PROJECT, env))
            out = Path(scratch) / f"run{round_number}"
            train_args = ["train", str(recipe), "--out", str(out), "--max-steps", str(args.steps)]
            report_row(f"[{round_number}] train, {args.steps} steps", run_child(TRAIN, train_args, PROJECT, env))
            if args.evaluate:
                evaluate_args = ["evaluate", str(out / "last"), "--data", str(data)]
                report_row(f"[{round_number}] evaluate", run_child(TRAIN, evaluate_args, PROJECT, env))


if __name__ == "__main__":
    main()
