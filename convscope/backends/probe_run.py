"""The run directory of ``convscope probe``: checkpoints so an interrupted run resumes.

A run is identified by a key: the SHA-256 of the network (its graph after any head replacement),
the data set's fingerprint, the seed and the training settings.  The directory holds

* ``run.json`` — the key, what was run, the finished epochs' records;
* ``model.pt`` — model and optimizer state after the last finished epoch (``torch.save``; read back
  with ``torch.load(weights_only=True)``, which accepts tensors and plain containers only);
* ``layers-<probe key>.json`` — the measured layers so far (probe settings are part of that key).

Every file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
The directory is created, and tried with a small file, when the run starts; if writing a checkpoint
fails later (a full disk), the run goes on without checkpoints and ``failed`` says why.
The default directory is ``<cache>/probe/<key>``, where ``<cache>`` is ``$CONVSCOPE_CACHE`` (the
directory of the latency cache too; if it names a ``.sqlite``/``.db`` file, that file's directory),
else ``$XDG_CACHE_HOME/convscope`` (``~/.cache/convscope``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from convscope.errors import InputError
from convscope.probe.results import EpochRecord, LayerProbe

__all__ = ["RunDir", "check_writable", "default_cache_dir", "run_key"]

_FILES = ("run.json", "model.pt")


def default_cache_dir() -> Path:
    env = os.environ.get("CONVSCOPE_CACHE")
    if env:
        p = Path(env).expanduser()
        return p.parent if p.suffix in (".sqlite", ".db") else p
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "convscope"


def run_key(parts: Mapping[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_writable(path: Path, *, default: bool = False) -> None:
    """Create the directory ``path`` and write a file there, or raise an InputError that says which
    directory it is: ``default`` when the user gave no ``--checkpoint``."""
    what = f"the default checkpoint directory {path}" if default else f"--checkpoint {path}"
    instead = "give --checkpoint DIR elsewhere, or --no-checkpoint" if default else \
        "give another directory, or --no-checkpoint"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{what}: cannot write there ({exc.strerror or exc}); {instead}") from None


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class RunDir:
    """Checkpoint files of one run.  ``fresh`` discards what an earlier run of the same key left."""

    def __init__(self, path: Path, key: str, describe: Mapping[str, Any], *, fresh: bool = False,
                 default: bool = False):
        """``default``: ``path`` is the default run directory (the user gave no ``--checkpoint``)."""
        self.path = path
        self.key = key
        self.describe = dict(describe)
        self.failed: str | None = None  # why checkpoints stopped being written, once they did
        self.damaged: dict[str, str] = {}  # checkpoint files that could not be read: ignored, said in the notes
        what = f"the default checkpoint directory {path}" if default else f"--checkpoint {path}"
        check_writable(path, default=default)
        meta = self._read_meta()
        if meta is not None and meta.get("key") != key and not fresh:
            differ = [f"{k} {meta[k]} there, {v} now" for k, v in self.describe.items()
                      if k in meta and meta[k] != v and k not in ("network", "images")]
            differ += [f"the {k} {'differs' if k == 'network' else 'differ'}" for k in ("network", "images")
                       if k in meta and meta[k] != self.describe.get(k)]
            why = "; ".join(differ) if differ else "other settings"
            raise InputError(f"{what}: holds the checkpoint of another run ({meta.get('model')} on "
                             f"{meta.get('data')}: {why}); use another directory, or --fresh to start over there")
        if fresh or (meta is not None and meta.get("key") != key):
            self._clear()

    def _read_meta(self) -> dict[str, Any] | None:
        p = self.path / "run.json"
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self._damaged(p, exc)  # ignored and rewritten
            return None
        if not isinstance(data, dict):
            self._damaged(p, ValueError("not a JSON object"))
            return None
        return data

    def _damaged(self, path: Path, exc: BaseException) -> None:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.damaged[str(path)] = (f"the checkpoint {path} could not be read ({why[:120]}): it was ignored, so this "
                                   "part of the run was done again")

    def _clear(self) -> None:
        for name in _FILES:
            (self.path / name).unlink(missing_ok=True)
        for p in self.path.glob("layers-*.json"):
            p.unlink(missing_ok=True)

    # -- training -------------------------------------------------------------------------------
    def load_training(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
                      ) -> tuple[int, list[EpochRecord]]:
        """(finished epochs, their records) from the checkpoint, restoring the states; (0, []) if none."""
        meta = self._own_meta()
        if meta is None:
            return 0, []
        try:
            state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError,
                pickle.UnpicklingError) as exc:  # unreadable or from another torch: start over
            self._damaged(self.path / "model.pt", exc)
            return 0, []
        epoch = int(state["epoch"])
        history = [EpochRecord.from_dict(h) for h in meta.get("history", [])][:epoch]
        return (epoch, history) if len(history) == epoch else (0, [])

    def _own_meta(self) -> dict[str, Any] | None:
        """The checkpoint's metadata when it is this run's and has a model beside it; else None."""
        meta = self._read_meta()
        if meta is None or meta.get("key") != self.key or not (self.path / "model.pt").is_file():
            return None
        return meta

    def saved_history(self) -> list[EpochRecord]:
        """The finished epochs' records the checkpoint holds (without reading the model): what a run
        stopped before it restored them still has to report."""
        meta = self._own_meta()
        if meta is None:
            return []
        try:
            return [EpochRecord.from_dict(h) for h in meta.get("history", [])]
        except (KeyError, TypeError, ValueError):
            return []

    def _write(self, path: Path, write: Any) -> None:
        """Write one checkpoint file; a failure stops checkpointing (noted in ``failed``), not the run."""
        if self.failed:
            return
        try:
            _atomic_write(path, write)
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
            self.failed = (f"checkpoints stopped: cannot write {path} ({exc.strerror or exc}); the run went on "
                           "without them, so a rerun may redo some of it")

    def save_training(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                      history: Sequence[EpochRecord]) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        self._write(self.path / "model.pt", lambda p: torch.save(state, p))
        meta = {**self.describe, "key": self.key, "epochs_done": epoch, "history": [h.to_dict() for h in history]}
        self._write(self.path / "run.json", lambda p: p.write_text(json.dumps(meta, indent=1), encoding="utf-8"))

    # -- measured layers ------------------------------------------------------------------------
    def _layers_file(self, probe_key: str) -> Path:
        return self.path / f"layers-{probe_key[:16]}.json"

    def load_layers(self, probe_key: str) -> dict[str, LayerProbe]:
        p = self._layers_file(probe_key)
        try:
            rows = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []
            return {r["name"]: LayerProbe.from_dict(r) for r in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._damaged(p, exc)
            return {}

    def save_layers(self, probe_key: str, layers: Sequence[LayerProbe]) -> None:
        text = json.dumps([r.to_dict() for r in layers], indent=1)
        self._write(self._layers_file(probe_key), lambda p: p.write_text(text, encoding="utf-8"))
