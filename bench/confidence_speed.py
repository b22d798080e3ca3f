"""Bootstrap confidence intervals of AUC: FaceLab's vectorised redraws against the plain way
(a Python loop calling scikit-learn's roc_auc_score on each redrawn pair set), same redraws.

Both draw the same 1,000 resamples of the pairs (lib.eval.confidence.redraw_counts), so they
compute the same numbers; the baseline is what a student writes first and the best the plain
loop can do (sklearn's AUC is itself vectorised). Prints seconds, the ratio and the load average.
Usage: python bench/confidence_speed.py [--pairs 1000 6000] [--resamples 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.eval import confidence  # noqa: E402


def pairs(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    return rng.normal(labels * 1.5, 1.0), labels


def loop_aucs(scores: np.ndarray, labels: np.ndarray, resamples: int) -> np.ndarray:
    rng = np.random.default_rng(confidence.SEED)
    aucs = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(scores), len(scores))
        aucs.append(roc_auc_score(labels[drawn], scores[drawn]))
    return np.asarray(aucs)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 6000])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    for count in args.pairs:
        scores, labels = pairs(count)
        ours = timed(lambda: confidence.bootstrap_auc_eer(scores, labels, args.resamples))
        plain = timed(lambda: loop_aucs(scores, labels, args.resamples))
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"{count:>7,} pairs x {args.resamples} redraws: vectorised {ours:.2f} s (AUC and EER), "
              f"sklearn loop {plain:.2f} s (AUC only): {plain / ours:.1f}x  [load average {load}]")


if __name__ == "__main__":
    main()
