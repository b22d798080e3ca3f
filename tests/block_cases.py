"""Block configurations the tests run through: every registered block, with its
options exercised (stride 2, width change, SE, groups, kernel, expansion, norm)."""
from __future__ import annotations

BLOCK_CASES: dict[str, list[tuple[int, int, int, dict]]] = {
    # name: [(in_chs, out_chs, stride, options), ...]
    "conv": [(8, 8, 1, {}), (8, 16, 2, {"kernel_size": 5}), (4, 8, 1, {"kernel_size": 1, "act": "gelu"})],
    "basic": [(8, 8, 1, {}), (8, 16, 2, {"se_ratio": 0.25}), (8, 16, 1, {"act": "silu"})],
    "bottleneck": [(16, 16, 1, {}), (16, 32, 2, {"se_ratio": 1 / 16}),
                   (16, 32, 1, {"groups": 4, "base_width": 8}), (16, 16, 2, {"expansion": 2})],
    "inverted_residual": [(8, 8, 1, {}), (8, 16, 2, {"expansion": 1}),
                          (8, 8, 1, {"kernel_size": 5, "se_ratio": 0.25}), (8, 12, 1, {"expansion": 4})],
    "convnext": [(8, 8, 1, {}), (8, 16, 2, {}), (8, 16, 1, {"norm": "batch", "layer_scale": 0.0}),
                 (8, 8, 1, {"kernel_size": 3, "expansion": 2})],
    "dwsep": [(8, 8, 1, {}), (8, 16, 2, {"se_ratio": 0.25, "kernel_size": 5})],
}

CASES = [(name, *case) for name, cases in BLOCK_CASES.items() for case in cases]
CASE_IDS = [f"{name}-{i}-{o}-s{s}-{'-'.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in opts.items())}"
            for name, i, o, s, opts in CASES]
