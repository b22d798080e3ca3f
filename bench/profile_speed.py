"""How fast is profile()? Counting convnext_tiny at 224x224 on paper, against the
obvious alternative: build the model on the meta device and run FlopCounterMode.

Prints both times (median of repeated runs, measured in this one run) and the ratio.
The Build page recounts on every widget change, so profile() must stay well under 50 ms.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from lib.model.net import FaceNet  # noqa: E402
from lib.model.presets import PRESETS  # noqa: E402
from lib.model.profile import profile  # noqa: E402


def meta_flop_count(spec) -> tuple[int, int]:
    with torch.device("meta"):
        model = FaceNet(spec).eval()
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, spec.in_chs, spec.input_size, spec.input_size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    spec = PRESETS["convnext_tiny"]
    meta_flop_count(spec)  # warm up: first-call imports and dispatch caches
    profile(spec)
    result = profile(spec)
    params, macs = meta_flop_count(spec)
    assert (result.params, result.macs) == (params, macs), "profile() and FlopCounterMode disagree"
    fast = median_seconds(lambda: profile(spec), repeats=200)
    slow = median_seconds(lambda: meta_flop_count(spec), repeats=7)
    print(f"convnext_tiny @224: {params:,} parameters, {macs:,} MACs (both methods agree)")
    print(f"profile():                        {fast * 1e3:8.3f} ms (median of 200)")
    print(f"meta build + FlopCounterMode:     {slow * 1e3:8.3f} ms (median of 7)")
    print(f"ratio: profile() is {slow / fast:,.0f}x faster")


if __name__ == "__main__":
    main()
