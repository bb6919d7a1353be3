"""``probe``: train a network briefly, then measure per weighted layer saturation and probe accuracy.

Steps (seeds/002's check of the border layer, on the user's data):

1. load the network (any model reference) and the data set at the network's input; if the
   classifier's output count differs from the number of classes, the last linear (or convolution)
   layer is resized and a note says so;
2. build it with random weights (:func:`convscope.backends.to_torch.build_module`, seeded) and
   train it for a few epochs: Adam (or SGD with momentum), cross-entropy, seeded shuffles; CUDA
   when available.  After each epoch BatchNorm statistics are recomputed with the epoch's final
   weights (see :func:`_recalibrate_batchnorm`) before the held-out accuracy is measured.  Every finished epoch is checkpointed (:mod:`convscope.backends.probe_run`), so
   rerunning the same command resumes; the shuffle of epoch e depends only on (seed, e), so a
   resumed run gives the result of an uninterrupted one;
3. for each convolution and linear layer: the saturation of its outputs on the held-out split
   and the held-out accuracy of a linear probe trained on its (pooled) outputs of the training
   split (:mod:`convscope.backends.probe_stats`); layers are measured in groups whose stored
   features fit ``FEATURE_BYTES``, each group in one pass over the probe samples;
4. the verdict (:func:`convscope.probe.rules.verdict`).

Ctrl-C raises :class:`ProbeInterrupted` carrying the partial result (finished epochs and layers);
the checkpoint keeps them for the next run.  Nothing here prints; progress goes to ``progress``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from convscope.analyses.analyze import analyze_graph
from convscope.api import load_graph
from convscope.backends.data import DataSet, Split, load_data
from convscope.backends.probe_run import RunDir, check_writable, default_cache_dir, run_key
from convscope.backends.probe_stats import (
    DEFAULT_PROBE_DIMS,
    OnlineCovariance,
    as_samples,
    fit_linear_probe,
    pooled_dims,
    probe_features,
    projection_for,
)
from convscope.backends.to_torch import GraphModule, build_module
from convscope.errors import ConvscopeError, InputError, NothingUsable
from convscope.ir.graph import Graph, GraphBuilder, Node
from convscope.ir.ops import OpKind
from convscope.ir.transform import rebuild
from convscope.probe.results import DataInfo, EpochRecord, LayerProbe, ProbeResult, Verdict
from convscope.probe.rules import DEFAULT_DELTA, saturation_from_covariance, verdict
from convscope.probe.synthetic import MAX_SEED
from convscope.results import Analysis, LayerRow

__all__ = ["FEATURE_BYTES", "ProbeConfig", "ProbeInterrupted", "Progress", "fit_head", "probe"]

FEATURE_BYTES = 512 << 20
MAX_THREADS = 4096
_PASS_THROUGH = frozenset({OpKind.ACT, OpKind.DROPOUT, OpKind.FLATTEN, OpKind.IDENTITY, OpKind.SOFTMAX,
                           OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL, OpKind.BATCHNORM, OpKind.SCALE,
                           OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL})


MAX_LR = 1e6  # far beyond any useful rate (training diverges and says so); 1e300 overflowed float32 in the optimizer


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # None: 1e-3 for Adam, 0.05 for SGD
    optimizer: str = "adam"  # adam | sgd
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    probe_samples: int = 5000  # training images for the probes (and at most as many held-out ones)
    probe_dims: int = DEFAULT_PROBE_DIMS
    delta: float = DEFAULT_DELTA
    threads: int | None = None  # CPU threads for torch while probing (None: torch's default)

    def check(self) -> None:
        """Every setting in range, or an InputError that names it (``--epochs`` on the command line,
        ``epochs`` in Python: both are given)."""
        def whole(value: object, name: str, least: int) -> None:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
            if not ok:
                raise InputError(f"{name} must be an integer >= {least}, got {value!r}")

        whole(self.epochs, "epochs (--epochs)", 0)
        whole(self.batch_size, "batch_size (--batch-size)", 2)
        whole(self.probe_samples, "probe_samples (--probe-samples)", 10)
        whole(self.probe_dims, "probe_dims", 1)
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                             and 1 <= self.threads <= MAX_THREADS):
            raise InputError(f"--threads must be an integer from 1 to {MAX_THREADS}, got {self.threads!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
                                        and 0 < self.lr <= MAX_LR):
            raise InputError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed must be an integer with 0 <= seed < 2**32, got {self.seed}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not 0 <= self.delta < 1:
            raise InputError(f"delta (the accuracy gain that counts) must be a number from 0 to 1, got {self.delta!r}")
        if not isinstance(self.device, str):
            raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.optimizer == "adam" else 0.05)

    def training_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.learning_rate, "batch_size": self.batch_size,
                "weight_decay": 5e-4 if self.optimizer == "sgd" else 0.0}


class Progress(Protocol):
    """Where long work reports: one bar at a time (the CLI draws them with rich, on stderr)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class ProbeInterrupted(KeyboardInterrupt):
    """Ctrl-C during a probe; ``partial`` holds what was finished (also kept in the checkpoint)."""

    def __init__(self, partial: ProbeResult):
        super().__init__("interrupted")
        self.partial = partial


# -- the network ------------------------------------------------------------------------------------
def _head_node(graph: Graph) -> Node:
    node = graph.node(graph.outputs[0])
    while node.op in _PASS_THROUGH and node.inputs:
        node = graph.node(node.inputs[0])
    if node.op not in (OpKind.LINEAR, OpKind.CONV):
        raise InputError(f"{graph.name}: cannot find the classifier layer: the output comes from layer "
                         f"'{node.name}' ({node.op.value}), not from a linear or convolution layer")
    return node


def fit_head(graph: Graph, classes: int) -> tuple[Graph, str | None]:
    """The graph with a classifier of ``classes`` outputs, and a note when its head was replaced."""
    if len(graph.outputs) != 1:
        raise InputError(f"{graph.name}: probe needs a classifier with one output, the network has "
                         f"{len(graph.outputs)} ({', '.join(graph.outputs)})")
    out = graph.node(graph.outputs[0]).out.shape
    if not out or any(d != 1 for d in out[1:]):
        raise InputError(f"{graph.name}: probe needs a classifier output (K,), the network gives {list(out)}")
    if out[0] == classes:
        return graph, None
    head = _head_node(graph)
    field = "out_features" if head.op is OpKind.LINEAR else "out_channels"
    old = getattr(head.attrs, field)
    new_attrs = replace(head.attrs, **{field: classes})  # type: ignore[arg-type]

    def edit(node: Node, b: GraphBuilder) -> Any:
        return new_attrs if node.name == head.name else None

    return rebuild(graph, edit), f"replaced the head: layer '{head.name}' now has {classes} outputs (was {old})"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda[:N], got '{name}'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here (use auto or cpu)")
    return dev


def _logits(module: GraphModule, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = module(x)
    return out.reshape(out.shape[0], -1)


# -- training -------------------------------------------------------------------------------------
def _optimizer(module: torch.nn.Module, cfg: ProbeConfig) -> torch.optim.Optimizer:
    t = cfg.training_dict()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=t["lr"], momentum=0.9, weight_decay=t["weight_decay"])
    return torch.optim.Adam(module.parameters(), lr=t["lr"])


def _accuracy(module: GraphModule, ds: DataSet, split: Split, idx: torch.Tensor, device: torch.device,
              batch: int) -> float:
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            b = idx[i:i + batch]
            pred = _logits(module, ds.batch(split, b).to(device)).argmax(1).cpu()
            correct += int((pred == split.labels[b]).sum())
    return correct / max(1, len(idx))


def _epoch(module: GraphModule, opt: torch.optim.Optimizer, ds: DataSet, cfg: ProbeConfig, epoch: int,
           device: torch.device, progress: Progress) -> tuple[float, float]:
    n = len(ds.train)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and friends
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    module.train()
    total_loss, correct, seen = 0.0, 0, 0
    progress.start(f"train epoch {epoch + 1}/{cfg.epochs}", math.ceil(n / cfg.batch_size))
    for i in range(0, n, cfg.batch_size):
        b = perm[i:i + cfg.batch_size]
        if len(b) < 2:  # BatchNorm cannot train on a single image
            continue
        x, y = ds.batch(ds.train, b).to(device), ds.train.labels[b].to(device)
        logits = _logits(module, x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise ConvscopeError(f"training diverged in epoch {epoch + 1} (loss {float(loss.detach())}): lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        total_loss += float(loss.detach()) * len(b)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(b)
        progress.advance()
    return total_loss / max(1, seen), correct / max(1, seen)


_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
BN_SAMPLES = 2000


def _recalibrate_batchnorm(module: GraphModule, ds: DataSet, cfg: ProbeConfig, device: torch.device) -> None:
    """Recompute BatchNorm running statistics as plain averages over up to BN_SAMPLES training images
    with the final weights ("precise BN").  After a short training the exponential running averages
    still carry the early weights' statistics, so eval mode would score a different network than
    the one trained; this pass changes no weight and does not affect training (train mode uses
    batch statistics)."""
    bns = [m for m in module.modules() if isinstance(m, _BN)]
    if not bns:
        return
    module.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    idx = _subset(len(ds.train), BN_SAMPLES, cfg.seed + 3)
    with torch.no_grad():
        for i in range(0, len(idx), cfg.batch_size):
            b = idx[i:i + cfg.batch_size]
            if len(b) > 1:
                module(ds.batch(ds.train, b).to(device))
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    module.eval()


def _train(module: GraphModule, ds: DataSet, cfg: ProbeConfig, run: RunDir | None, device: torch.device,
           progress: Progress, partial: Any) -> tuple[list[EpochRecord], int]:
    """The epochs' records, and how many of them came from the checkpoint."""
    opt = _optimizer(module, cfg)
    start, history = run.load_training(module, opt) if run is not None else (0, [])
    all_test = torch.arange(len(ds.test))
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        try:
            loss, train_acc = _epoch(module, opt, ds, cfg, epoch, device, progress)
            _recalibrate_batchnorm(module, ds, cfg, device)
            test_acc = _accuracy(module, ds, ds.test, all_test, device, 2 * cfg.batch_size)
            history.append(EpochRecord(epoch + 1, loss, train_acc, test_acc, time.perf_counter() - t0))
            if run is not None:
                run.save_training(module, opt, epoch + 1, history)
        except KeyboardInterrupt:
            raise ProbeInterrupted(partial(history, ())) from None
    return history, start


# -- measuring ------------------------------------------------------------------------------------
def _rf(row: LayerRow, res: tuple[int, int]) -> tuple[tuple[Any, Any] | None, float | None]:
    rf = row.rf_min
    if rf is None or any(v is None or math.isinf(float(v)) for v in rf):
        return None, None
    return (rf[0], rf[1]), min(float(rf[0]) / res[0], float(rf[1]) / res[1])


def _subset(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]


def _groups(rows: Sequence[LayerRow], cfg: ProbeConfig, n_samples: int) -> list[list[LayerRow]]:
    groups: list[list[LayerRow]] = [[]]
    used = 0
    for r in rows:
        need = n_samples * min(pooled_dims(r.out_shape, cfg.probe_dims), cfg.probe_dims) * 4
        if groups[-1] and used + need > FEATURE_BYTES:
            groups.append([])
            used = 0
        groups[-1].append(r)
        used += need
    return [g for g in groups if g]


def _collect(module: GraphModule, ds: DataSet, split: Split, idx: torch.Tensor, rows: Sequence[LayerRow],
             cfg: ProbeConfig, device: torch.device, covs: dict[str, OnlineCovariance] | None,
             proj: dict[str, torch.Tensor | None], progress: Progress) -> dict[str, torch.Tensor]:
    """Pooled probe features of ``rows`` on ``split[idx]``; updates ``covs`` when given."""
    names = [r.name for r in rows]
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    module.eval()
    with torch.no_grad():
        for i in range(0, len(idx), cfg.batch_size * 2):
            _, cap = module.run(ds.batch(split, idx[i:i + cfg.batch_size * 2]).to(device), capture=names,
                                stop_early=True)
            for n in names:
                if covs is not None:
                    covs[n].update(as_samples(cap[n]))
                feats[n].append(probe_features(cap[n], cfg.probe_dims, proj[n]))
            progress.advance()
    return {n: torch.cat(v) for n, v in feats.items()}


def _measure_group(module: GraphModule, ds: DataSet, rows: Sequence[LayerRow], res: tuple[int, int],
                   cfg: ProbeConfig, device: torch.device, idx_tr: torch.Tensor, idx_te: torch.Tensor,
                   progress: Progress, label: str, position: Mapping[str, int]) -> Iterator[LayerProbe]:
    """One pass over the probe samples for the whole group, then each layer's numbers in turn.
    ``position``: each layer's index among all weighted layers, which seeds its random projection
    (so a layer is projected the same way whichever group it falls in, resumed or not)."""
    width = {r.name: (r.out_shape[0] if len(r.out_shape) == 3 else math.prod(r.out_shape)) for r in rows}
    covs = {r.name: OnlineCovariance(width[r.name], device) for r in rows}
    proj = {r.name: projection_for(pooled_dims(r.out_shape, cfg.probe_dims), cfg.probe_dims,
                                   cfg.seed + position[r.name], device) for r in rows}
    step = cfg.batch_size * 2
    progress.start(f"{label}: forward passes", math.ceil(len(idx_tr) / step) + math.ceil(len(idx_te) / step))
    ftr = _collect(module, ds, ds.train, idx_tr, rows, cfg, device, None, proj, progress)
    fte = _collect(module, ds, ds.test, idx_te, rows, cfg, device, covs, proj, progress)
    ytr, yte = ds.train.labels[idx_tr].to(device), ds.test.labels[idx_te].to(device)
    for r in rows:
        rf, ratio = _rf(r, res)
        base = LayerProbe(r.name, r.op, rf, ratio, r.unproductive, width[r.name], None, None, None, None,
                          int(ftr[r.name].shape[1]), covs[r.name].n)
        try:
            sat, k = saturation_from_covariance(covs[r.name].covariance())
            acc, acc_tr = fit_linear_probe(ftr[r.name], ytr, fte[r.name], yte, len(ds.info.classes))
            yield replace(base, saturation=sat, eigendirections=k, probe_accuracy=acc, probe_train_accuracy=acc_tr)
        # e.g. out of memory on one wide layer, or no eigendecomposition of degenerate activations
        except (RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
            yield replace(base, error=f"{type(exc).__name__}: {exc}")
        del ftr[r.name], fte[r.name]


def _measure(module: GraphModule, ds: DataSet, analysis: Analysis, cfg: ProbeConfig, device: torch.device,
             run: RunDir | None, probe_key: str, progress: Progress, partial: Any,
             history: list[EpochRecord]) -> tuple[list[LayerProbe], int]:
    rows = analysis.weighted_layers()
    idx_tr = _subset(len(ds.train), cfg.probe_samples, cfg.seed + 1)
    idx_te = _subset(len(ds.test), cfg.probe_samples, cfg.seed + 2)
    done = run.load_layers(probe_key) if run is not None else {}
    todo = [r for r in rows if r.name not in done]
    position = {r.name: i for i, r in enumerate(rows)}
    try:
        for group in _groups(todo, cfg, len(idx_tr) + len(idx_te)):
            label = f"layers {group[0].name}…{group[-1].name}" if len(group) > 1 else f"layer {group[0].name}"
            measure = _measure_group(module, ds, group, analysis.resolution, cfg, device, idx_tr, idx_te, progress,
                                     label, position)
            first = next(measure)  # the passes over the data; then one bar over all layers
            progress.start("measure layers", len(rows))
            if len(done):
                progress.advance(len(done))  # measured before (this run, or an interrupted one)
            for m in itertools.chain([first], measure):
                done[m.name] = m
                if run is not None:
                    run.save_layers(probe_key, [done[r.name] for r in rows if r.name in done])
                progress.advance()
    except KeyboardInterrupt:
        raise ProbeInterrupted(partial(history, [done[r.name] for r in rows if r.name in done])) from None
    return [done[r.name] for r in rows], len(idx_te)


# -- the whole run --------------------------------------------------------------------------------
def _context_note(info: DataInfo, rows: Sequence[LayerRow]) -> str | None:
    """Which layer first sees the context the data needs (from the analysis: every weighted layer,
    measured yet or not, so an interrupted run says the same)."""
    if info.context_px is None:
        return None
    first = next((r for r in rows if r.rf_min is not None and min(float(v) for v in r.rf_min) >= info.context_px), None)
    where = f"the first layer that sees it is {first.name} (rf_min {first.rf_min[0]})" if first and first.rf_min \
        else "no layer before the head sees it"
    return f"the data needs {info.context_px} px of context: {where}"


def probe(
    model: Any,
    data: str | Path | DataSet,
    *,
    input: Sequence[int] | None = None,
    config: ProbeConfig = ProbeConfig(),
    checkpoint: str | Path | bool | None = None,
    fresh: bool = False,
    progress: Progress | None = None,
) -> ProbeResult:
    """Train ``model`` on ``data`` and measure its weighted layers (see the module docstring).

    ``checkpoint``: a directory, None for the default run directory, or False for none.
    """
    if not isinstance(config, ProbeConfig):
        raise InputError(f"config must be a ProbeConfig, got {type(config).__name__}")
    config.check()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:  # training seeds torch's generators: the caller's random streams are left as they were
        with torch.random.fork_rng(devices=gpus):
            return _probe(model, data, input, config, checkpoint, fresh, progress or _Silent())
    finally:
        torch.set_num_threads(threads)


def _run_dir(graph: Graph, ds: DataSet, config: ProbeConfig, checkpoint: str | Path | bool | None,
             fresh: bool) -> tuple[RunDir | None, str]:
    """The checkpoint directory (None without checkpoints) and the key of the probe settings."""
    train_key = run_key({"graph": graph.to_dict(), "data": ds.fingerprint, "seed": config.seed,
                         "epochs": config.epochs, "training": config.training_dict()})
    probe_key = run_key({"train": train_key, "samples": config.probe_samples, "dims": config.probe_dims})
    if checkpoint is False:
        return None, probe_key
    given = isinstance(checkpoint, (str, Path))
    where = Path(checkpoint) if given else default_cache_dir() / "probe" / train_key[:16]
    describe = {"model": graph.name, "data": ds.info.ref, "epochs": config.epochs, "seed": config.seed,
                **config.training_dict(), "network": run_key(graph.to_dict())[:12], "images": ds.fingerprint[:12]}
    return RunDir(where, train_key, describe, fresh=fresh, default=not given), probe_key


def _probe(model: Any, data: str | Path | DataSet, input: Sequence[int] | None, config: ProbeConfig,
           checkpoint: str | Path | bool | None, fresh: bool, progress: Progress) -> ProbeResult:
    device = _device(config.device)
    if checkpoint is not False:  # before the model and the data are loaded (the run directory is made later)
        given = isinstance(checkpoint, (str, Path))
        check_writable(Path(checkpoint) if given else default_cache_dir() / "probe", default=not given)
    graph = load_graph(model, input=input)
    if len(graph.inputs) != 1 or len(graph.input_shape) != 3:
        raise InputError(f"{graph.name}: probe needs one image input (C, H, W), the network takes "
                         f"{[list(n.out.shape) for n in graph.inputs]}")
    ds = load_data(data, graph.input_shape, seed=config.seed)
    graph, head_note = fit_head(graph, len(ds.info.classes))
    analysis = analyze_graph(graph)
    if not analysis.weighted_layers():
        raise NothingUsable(f"{graph.name}: no convolution or linear layer to measure")
    run, probe_key = _run_dir(graph, ds, config, checkpoint, fresh)
    notes = [n for n in (head_note, *ds.notes) if n]

    def result(history: Sequence[EpochRecord], layers: Sequence[LayerProbe], *, complete: bool = False,
               train_acc: float | None = None, test_acc: float | None = None, n_probe: int = 1) -> ProbeResult:
        trained = bool(history) and len(history) == config.epochs
        if trained:
            test_acc = history[-1].test_accuracy
        v = Verdict("inconclusive", ("the run was interrupted",)) if not complete else verdict(
            layers, test_accuracy=test_acc if trained else None, chance=1 / len(ds.info.classes),
            n_test=len(ds.test), n_probe_test=n_probe, delta=config.delta)
        extra = [n for n in (_context_note(ds.info, analysis.weighted_layers()),) if n]
        if run is not None and run.failed:
            extra.append(run.failed)
        if run is not None:
            extra += run.damaged.values()
        return ProbeResult(graph.name, graph.input_shape, ds.info, config.epochs, config.seed, str(device),
                           config.training_dict(), tuple(history), train_acc, test_acc, analysis.border_layer,
                           tuple(layers), v, complete, str(run.path) if run else None, tuple(notes + extra))

    module = build_module(graph, seed=config.seed).to(device)
    # From here on Ctrl-C gives what was finished (ProbeInterrupted): _train and _measure raise it
    # with their partial results; any other moment (the BatchNorm pass of --epochs 0, the final
    # accuracy passes, a checkpoint being read) with what is done by then.
    history: list[EpochRecord] = []
    layers: list[LayerProbe] = []
    test_acc: float | None = None  # of the untrained network (--epochs 0); else the last epoch's
    try:
        history, resumed = _train(module, ds, config, run, device, progress, result)
        if resumed:
            notes.append(f"resumed from the checkpoint: {resumed} of {config.epochs} epoch(s) were done")
        if config.epochs == 0:  # untrained: BatchNorm statistics of the random network, as after an epoch
            notes.append("not trained (--epochs 0): random weights")
            _recalibrate_batchnorm(module, ds, config, device)
            test_acc = _accuracy(module, ds, ds.test, torch.arange(len(ds.test)), device, 2 * config.batch_size)
        layers, n_probe = _measure(module, ds, analysis, config, device, run, probe_key, progress,
                                   lambda h, ls: result(h, ls, test_acc=test_acc), history)
        train_acc = _accuracy(module, ds, ds.train, _subset(len(ds.train), config.probe_samples, config.seed + 1),
                              device, 2 * config.batch_size)
    except ProbeInterrupted:
        raise
    except KeyboardInterrupt:
        if not history and run is not None:  # stopped while the checkpoint was being restored: its
            history = run.saved_history()[:config.epochs]  # finished epochs are still finished
        raise ProbeInterrupted(result(history, layers, test_acc=test_acc if config.epochs == 0 else None)) from None
    return result(history, layers, complete=True, train_acc=train_acc, test_acc=test_acc, n_probe=n_probe)
