"""Time to parse and analyse each zoo network, spec text -> result (best of N runs).

    .venv/bin/python bench/analysis_speed.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from convscope.api import analyze
from convscope.frontends.from_spec import graph_from_spec_text
from convscope.zoo import zoo_entries, zoo_spec_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    t = Table(title=f"spec -> analysis, best and median of {args.runs} runs", header_style="bold")
    for col in ("network", "layers", "parse ms", "analyse ms (best)", "end to end ms (best)", "median ms"):
        t.add_column(col, justify="right" if col != "network" else "left")
    for e in zoo_entries():
        ref = f"zoo:{e.name}"
        analyze(ref)  # warm imports and caches of the interpreter
        parse, total = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            if not e.generated:
                graph_from_spec_text(zoo_spec_text(e.name), file=ref)
            t1 = time.perf_counter()
            a = analyze(ref)
            t2 = time.perf_counter()
            parse.append(t1 - t0)
            total.append(t2 - t1)
        best = min(total)
        t.add_row(e.name, str(len(a.layers)), f"{min(parse) * 1e3:.1f}" if not e.generated else "-",
                  f"{(best - min(parse)) * 1e3:.1f}" if not e.generated else "-", f"{best * 1e3:.1f}",
                  f"{statistics.median(total) * 1e3:.1f}")
    Console().print(t)
    print("end to end = parse + analysis (analyze(ref) reads the spec itself); one CPU thread, Python",
          ".".join(map(str, __import__("sys").version_info[:3])))


if __name__ == "__main__":
    main()
