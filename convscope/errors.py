"""Errors that carry where the problem is, so every front end can report file, line and layer.

Exit statuses (FORMATS.md §3): 0 done, 1 the analysis found nothing usable, 2 bad input.
"""

from __future__ import annotations

__all__ = ["ConvscopeError", "GraphError", "SpecError", "InputError", "NothingUsable", "NotCalibrated", "INPUT_HINT",
           "FIXED_INPUT", "FixedSizes"]

# What a PyTorch front-end error about sizes adds; a caller that states the input its own way (a
# deployment plan) puts its words in place of it.
INPUT_HINT = " (is --input / the input shape right?)"

# How the note of an ONNX file analysed at another size than it accepts starts (compare repeats it
# on the candidate that runs the file).
FIXED_INPUT = "the file fixes its input at"


class ConvscopeError(Exception):
    """Base class: a problem with what the user gave us (exit status 2)."""

    exit_status = 2


class InputError(ConvscopeError):
    """A bad argument, a missing file, a model that cannot be loaded."""


class FixedSizes(InputError):
    """A model file exported at one size with sizes fixed inside it (a resize to a recorded size),
    asked for a size at which those no longer fit."""


class GraphError(ConvscopeError):
    """An invalid graph: shape mismatch, unknown input name, cycle.  Names the layer."""

    def __init__(self, message: str, *, layer: str | None = None, source: str | None = None):
        self.layer = layer
        self.source = source
        self.detail = message
        where = f"{source}: " if source else ""
        who = f"layer '{layer}': " if layer else ""
        super().__init__(f"{where}{who}{message}")


class SpecError(ConvscopeError):
    """A problem in a YAML file; the message starts with file:line:column."""

    def __init__(self, message: str, *, file: str, line: int | None = None, column: int | None = None):
        self.file = file
        self.line = line
        self.column = column
        self.detail = message  # without the position
        pos = file
        if line is not None:
            pos += f":{line}"
            if column is not None:
                pos += f":{column}"
        super().__init__(f"{pos}: {message}")


class NothingUsable(ConvscopeError):
    """The analysis ran but found nothing usable (exit status 1)."""

    exit_status = 1


class NotCalibrated(InputError):
    """The local tier was asked for, and this machine has no calibration for the set-up."""


MAX_BATCH = 1 << 24  # images per call: more is a typo (and costs would lose their exactness)


def batch_size(value: object, what: str = "batch") -> int:
    """A positive int no larger than MAX_BATCH, else an InputError naming ``what``."""
    v = positive_int(value, what)
    if v > MAX_BATCH:
        raise InputError(f"{what} must be at most {MAX_BATCH}, got {v}")
    return v


def positive_int(value: object, what: str) -> int:
    """``value`` as a positive int, else an InputError naming ``what``: 1.5 and True are refused (the
    Python API gets what the command line's parser would have turned away)."""
    import operator

    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"{what} must be a positive integer, got {value!r}") from None
    if v < 1:
        raise InputError(f"{what} must be a positive integer, got {v}")
    return int(v)
