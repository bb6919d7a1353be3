"""`convscope probe MODEL --data DIR`: train briefly, then check the border prediction per layer."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convscope.cli._common import add_json_arg, check_outputs, console, html_arg, json_to_stdout, positive_float, shape_arg, write_json, threads_arg
from convscope.errors import InputError
from convscope.reports._text import plain

HELP = "train briefly and check the predicted border with saturation and linear probes"
DESCRIPTION = """\
Check the border-layer prediction on your data, as the paper behind it did: train the network for
a few epochs (random initialisation, Adam or SGD, cross-entropy, seeded; CUDA when available), then
for every convolution and linear layer measure

  saturation      the share of eigen-directions of the layer-output covariance needed to explain
                  99% of its variance (channel-wise for convolutions), over the layer's width;
  probe accuracy  held-out accuracy of a logistic-regression probe on the layer's pooled output.

Layers past the predicted border should add no probe accuracy and have lower saturation.  The
verdict says whether they do: agrees, partly, disagrees, inconclusive (the network learnt nothing)
or no_prediction (no layer is predicted unproductive).

DATA is an image folder (DIR/CLASS/…/*.png|jpg, searched recursively, or DIR/train/CLASS +
DIR/test/CLASS), a CIFAR-10/100 batch directory (data_batch_1..5 + test_batch, or train + test), or
synthetic:scales[:d=PX,n=N,test=N,noise=S,seed=S]:
generated images whose classes need d+1 px of context.  Images are resized to the network's input.
Every finished epoch and layer is checkpointed: rerunning the same command resumes.
"""
EPILOG = """\
exit status: 0 done, 1 nothing to measure, 2 bad input, 130 interrupted (partial results are written).

examples:
  convscope probe zoo:resnet18-imagenet --input 3,32,32 --data ~/data/cameras --epochs 5 --html probe.html
  convscope probe net.yaml --data ~/data/cifar-10-batches-py --json -
  convscope probe net.yaml --data synthetic:scales --epochs 3
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("probe", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="spec .yaml, zoo:NAME, .onnx, or module:factory / file.py:factory")
    p.add_argument("--data", required=True, metavar="DIR|synthetic:NAME", help="the data set (see above)")
    p.add_argument("--input", metavar="C,H,W|C,L", help="input shape, or C,L for a Conv1d model's signal (N, C, L) (required for PyTorch factories; overrides a spec's)")
    p.add_argument("--epochs", type=int, default=5, metavar="N", help="training epochs (default 5; 0: random weights)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="training batch size (default 64)")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"), help="default adam")
    p.add_argument("--lr", type=positive_float, metavar="X", help="learning rate (default 1e-3 for adam, 0.05 for sgd)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for weights, shuffles and splits (default 0)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="default: cuda when available")
    p.add_argument("--threads", type=threads_arg, metavar="N", help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--probe-samples", type=int, default=5000, metavar="N",
                   help="training images the probes learn from, and at most as many held-out ones (default 5000)")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: a run directory under "
                                                       "$CONVSCOPE_CACHE or ~/.cache/convscope)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
    add_json_arg(p)
    p.add_argument("--html", metavar="FILE", type=html_arg, help="also write a self-contained HTML report with the plots")
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width for the table")
    p.set_defaults(handler=run)


def _output(result: Any, args: argparse.Namespace) -> list[str]:
    """Every output asked for; one that fails does not stop the others (the table is printed unless
    the JSON goes to stdout).  Returns the failures' messages."""
    from convscope.reports.probe_html import write_probe_html
    from convscope.reports.probe_terminal import render_probe

    failed = []
    if args.json:
        try:
            write_json(result.to_dict(), args.json)
        except InputError as exc:
            failed.append(str(exc))
    wrote_html = False
    if args.html:
        try:
            write_probe_html(result, args.html)
            wrote_html = True
        except InputError as exc:
            failed.append(str(exc))
    if not json_to_stdout(args):
        con = console(args)
        render_probe(result, con)
        if wrote_html:
            con.print(plain(f"wrote {args.html}"))
    for message in failed:
        print(f"convscope probe: error: {message}", file=sys.stderr)
    return failed


def run(args: argparse.Namespace) -> int:
    from convscope.backends.probe import ProbeConfig, ProbeInterrupted, probe
    from convscope.reports.probe_terminal import progress_bars

    cfg = ProbeConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      seed=args.seed, device=args.device, probe_samples=args.probe_samples, threads=args.threads)
    shape = shape_arg(args.input) if args.input is not None else None
    checkpoint = False if args.no_checkpoint else args.checkpoint
    check_outputs(args)
    try:
        with progress_bars(console(args, stderr=True)) as bars:
            result = probe(args.model, args.data, input=shape, config=cfg, checkpoint=checkpoint, fresh=args.fresh,
                           progress=bars)
    except ProbeInterrupted as stop:
        failed = _output(stop.partial, args)
        what = "partial results written" if not failed else "the partial results that could be written were"
        print(f"convscope probe: interrupted; {what}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started: no result yet
        print("convscope probe: interrupted while loading the model or the data, before training; nothing to write",
              file=sys.stderr)
        return 130
    if _output(result, args):
        print("convscope probe: the run finished and its other outputs were written", file=sys.stderr)
        return 2
    return 0
