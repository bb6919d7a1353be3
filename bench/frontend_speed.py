"""Time to analyse a PyTorch module, capture included (RFA-Toolbox: 1.4-4.4 s, almost all tracing).

    .venv/bin/python bench/frontend_speed.py [--runs 5] [--res 224]

For full-size networks (tests/fixtures), prints the first call in a fresh process (capture + analysis,
what `convscope analyze net.py:make` pays after imports) and the best and median of ``--runs``
further calls, split into capture (module -> Graph) and analysis (Graph -> Analysis).  For ResNet-50
it also times the other ways to capture a graph with shapes, which convscope does not use:
torch.fx symbolic_trace + ShapeProp on fake tensors, torch.export, and convscope's own eager
fallback (run on zeros, record every call).  Module construction is not timed.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

NETWORKS = [
    ("resnet50", "fixtures.resnet:resnet50"),
    ("resnext50_32x4d", "fixtures.resnet:resnext50_32x4d"),
    ("mobilenet_v2", "fixtures.mobilenet:mobilenet_v2"),
    ("efficientnet_b0", "fixtures.efficientnet:efficientnet_b0"),
    ("convnext_tiny", "fixtures.convnext:convnext_tiny"),
    ("densenet121", "fixtures.densenet:densenet121"),
    ("unet", "fixtures.unet:unet"),
]


def build(factory: str):  # type: ignore[no-untyped-def]
    mod, fn = factory.split(":")
    return getattr(importlib.import_module(mod), fn)()


def once(module, shape):  # type: ignore[no-untyped-def]
    from convscope.analyses.analyze import analyze_graph
    from convscope.frontends.from_torch import graph_from_module

    t0 = time.perf_counter()
    g = graph_from_module(module, shape)
    t1 = time.perf_counter()
    a = analyze_graph(g)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, a


def alternatives(module, shape, runs: int) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    import torch
    import torch.fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp

    from convscope.frontends.from_torch import graph_from_module

    def fx_fake() -> None:
        gm = torch.fx.symbolic_trace(module)
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        ShapeProp(gm, fake_mode=mode).propagate(mode.from_tensor(torch.empty(1, *shape)))

    def export() -> None:
        torch.export.export(module, (torch.zeros(1, *shape),), strict=False)

    out = []
    for label, fn, n in (("fx symbolic_trace + ShapeProp (fake tensors)", fx_fake, runs),
                         ("torch.export (strict=False)", export, 2),
                         ("convscope eager fallback (run on zeros)",
                          lambda: graph_from_module(module, shape, capture="eager"), runs)):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            with torch.no_grad():
                fn()
            times.append(time.perf_counter() - t)
        out.append((label, min(times)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--no-alternatives", action="store_true", help="skip the slow reference captures")
    args = ap.parse_args()
    shape = (3, args.res, args.res)
    t = Table(title=f"PyTorch module -> analysis at {args.res}x{args.res} (ms; best/median of {args.runs})",
              header_style="bold")
    for col in ("network", "layers", "params", "first call", "capture", "analysis", "total best", "total median"):
        t.add_column(col, justify="left" if col == "network" else "right")
    t0 = time.perf_counter()
    import torch

    import convscope.frontends.from_torch  # noqa: F401
    imports = time.perf_counter() - t0
    modules = {}
    for name, factory in NETWORKS:
        m = build(factory)
        modules[name] = m
        c0, a0, a = once(m, shape)
        caps, anas = [], []
        for _ in range(args.runs):
            c, an, a = once(m, shape)
            caps.append(c)
            anas.append(an)
        totals = [c + an for c, an in zip(caps, anas)]
        t.add_row(name, str(len(a.layers)), f"{a.totals.params / 1e6:.1f}M", f"{(c0 + a0) * 1e3:.0f}",
                  f"{min(caps) * 1e3:.0f}", f"{min(anas) * 1e3:.0f}", f"{min(totals) * 1e3:.0f}",
                  f"{statistics.median(totals) * 1e3:.0f}")
    console = Console(width=120)
    console.print(t)
    print(f"imports (torch, convscope) before the first call: {imports * 1e3:.0f} ms; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {sys.version.split()[0]}")
    if not args.no_alternatives:
        alt = Table(title="other ways to capture ResNet-50 with shapes (capture only, best ms)", header_style="bold")
        alt.add_column("method")
        alt.add_column("ms", justify="right")
        caps = [once(modules["resnet50"], shape)[0] for _ in range(args.runs)]
        alt.add_row("convscope (fx with concrete shapes, lowered while tracing)", f"{min(caps) * 1e3:.0f}")
        for label, secs in alternatives(modules["resnet50"], shape, args.runs):
            alt.add_row(label, f"{secs * 1e3:.0f}")
        console.print(alt)


if __name__ == "__main__":
    main()
