"""The paper's experiment (seeds/002) on data available here: train a VGG-style and a ResNet-style
network on scikit-learn's bundled digits (1797 grey 8×8 images, 10 classes), resized to two input
resolutions, then per convolution the saturation and the held-out accuracy of a linear probe, next
to the predicted border layer; the verdict says whether the layers past the border add nothing.

    .venv/bin/python bench/probe_border.py [--res 16,32] [--epochs 15] [--device cuda] [--width 2]

Needs scikit-learn (the `dev` extra) for the data set only.  On a GPU, ``--width 4 --res 32,64``
runs the same experiment larger.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from convscope.backends.data import from_arrays
from convscope.backends.probe import ProbeConfig, probe
from convscope.frontends.from_spec import graph_from_spec_data
from convscope.reports.probe_terminal import VERDICT_STYLE, progress_bars, render_probe


def _conv(name: str, out: int) -> list[Any]:
    return [{"conv": {"out": out, "k": 3, "name": name}}, "bn", "relu"]


def vgg_style(res: int, w: int) -> dict[str, Any]:
    """VGG-11's shape, slimmed: 2+2+3+3 convolutions, three 2×2 max-pools."""
    layers: list[Any] = []
    for stage, (n, c) in enumerate(((2, 16), (2, 32), (3, 64), (3, 128)), start=1):
        for i in range(n):
            layers += _conv(f"s{stage}.conv{i + 1}", c * w)
        if stage < 4:
            layers.append({"maxpool": {"k": 2, "name": f"s{stage}.pool"}})
    return {"name": "vgg-style", "input": [1, res, res], "layers": [*layers, "gap", {"linear": {"out": 10, "name": "fc"}}]}


def resnet_style(res: int, w: int) -> dict[str, Any]:
    """ResNet-18's layout slimmed: 7×7/2 stem and 3×3/2 max-pool, four stages of two basic blocks
    (16, 32/2, 64/2, 128/2 channels)."""
    block = {"args": {"c": None, "s": 1}, "layers": [
        {"residual": {"body": [{"conv": {"out": "$c", "k": 3, "s": "$s", "name": "conv1"}}, "bn", "relu",
                               {"conv": {"out": "$c", "k": 3, "name": "conv2"}}, "bn"], "shortcut": "auto"}},
        "relu"]}
    layers: list[Any] = [{"conv": {"out": 16 * w, "k": 7, "s": 2, "name": "stem"}}, "bn", "relu",
                         {"maxpool": {"k": 3, "s": 2, "p": 1, "name": "pool"}}]
    for stage, (c, s) in enumerate(((16, 1), (32, 2), (64, 2), (128, 2)), start=1):
        for i in range(2):
            layers.append({"basic": {"c": c * w, "s": s if i == 0 else 1, "name": f"layer{stage}.{i}"}})
    return {"name": "resnet-style", "input": [1, res, res], "blocks": {"basic": block},
            "layers": [*layers, "gap", {"linear": {"out": 10, "name": "fc"}}]}


def digits(res: int, seed: int) -> Any:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:450], order[450:]
    names = [str(c) for c in range(10)]
    return from_arrays(x[train], d.target[train], x[test], d.target[test], (1, res, res), classes=names,
                       name=f"sklearn digits at {res}x{res}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", default="16,32", help="input resolutions (default 16,32)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--width", type=int, default=1, help="channel multiplier (default 1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--layers", action="store_true", help="print every run's per-layer table")
    args = ap.parse_args()
    con = Console(highlight=False)
    if not con.is_terminal:
        con = Console(highlight=False, width=200)
    summary = Table(title=f"border check on sklearn digits ({args.epochs} epochs, seed {args.seed}, width ×{args.width})",
                    header_style="bold", title_justify="left")
    for col in ("network", "input", "test acc", "predicted border", "unproductive", "probes plateau at",
                "probe gain", "band", "sat. before", "sat. after", "verdict", "seconds", "device"):
        summary.add_column(col, justify="left" if col in ("network", "predicted border", "probes plateau at",
                                                         "verdict", "device") else "right")
    cfg = ProbeConfig(epochs=args.epochs, batch_size=32, lr=args.lr, seed=args.seed, device=args.device,
                      threads=args.threads)
    for res in (int(r) for r in args.res.split(",")):
        data = digits(res, args.seed)
        for make in (vgg_style, resnet_style):
            graph = graph_from_spec_data(make(res, args.width))
            t0 = time.perf_counter()
            with progress_bars(Console(stderr=True), prefix=f"{graph.name} {res}px ") as bars:
                r = probe(graph, data, config=cfg, checkpoint=False, progress=bars)
            secs = time.perf_counter() - t0
            if args.layers:
                render_probe(r, con)
                con.print()
            v = r.verdict
            n_un = sum(1 for x in r.layers if x.unproductive)
            summary.add_row(r.model, f"{res}×{res}", f"{r.test_accuracy:.3f}", r.border_layer or "none",
                            f"{n_un}/{sum(1 for x in r.layers if x.is_spatial)}", v.plateau_layer or "-",
                            "" if v.probe_gain is None else f"{v.probe_gain:+.3f}",
                            "" if v.gain_threshold is None else f"{v.gain_threshold:.3f}",
                            "" if v.saturation_before is None else f"{v.saturation_before:.3f}",
                            "" if v.saturation_after is None else f"{v.saturation_after:.3f}",
                            f"[{VERDICT_STYLE.get(v.status, '')}]{v.status}[/]", f"{secs:.1f}", r.device)
    con.print(summary)


if __name__ == "__main__":
    main()
