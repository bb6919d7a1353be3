"""Render the camera example's HTML report and take a screenshot of it in headless Chromium, for a
person to look at.

    .venv/bin/python bench/report_screenshot.py [--device raspi4] [--out report.png]

Uses the real latency prediction (the plan's device, or --device); the screenshot is full-page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from convscope.analyses.deployment import compare
from convscope.reports.compare_report import write_comparison_html

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default=str(ROOT / "examples" / "camera" / "plan.yaml"))
    ap.add_argument("--device", default=None, help="override the plan's device (local, a profile name or file)")
    ap.add_argument("--html", default="report.html")
    ap.add_argument("--out", default="report.png")
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args()
    cmp = compare(args.plan, device=args.device)
    write_comparison_html(cmp, args.html)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed (make test installs it: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size=1200,{args.height}",
                        f"--screenshot={Path(args.out).resolve()}", Path(args.html).resolve().as_uri()],
                       check=True, capture_output=True)
    print(f"verdict: {cmp.verdict.best} ({cmp.tier} prediction on {cmp.device})")
    for r in cmp.verdict.reasons:
        print(f"  - {r}")
    print(f"wrote {args.html} and {args.out}")


if __name__ == "__main__":
    main()
