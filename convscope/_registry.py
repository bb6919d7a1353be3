"""Handler tables: one small function per key (op kind, ONNX op, torch function…), registered by
decorator.  Registration is loud: a second handler for the same key raises at import."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["registrar", "require_all"]

H = TypeVar("H", bound=Callable[..., Any])


def _label(key: object) -> str:
    return str(getattr(key, "value", None) or getattr(key, "__name__", None) or key)


def registrar(table: dict[Any, Any], what: str) -> Callable[..., Callable[[H], H]]:
    """``register = registrar(TABLE, "shape handler")``; then ``@register(key, …)`` on a function."""

    def register(*keys: object) -> Callable[[H], H]:
        def deco(fn: H) -> H:
            for k in keys:
                if k in table:
                    raise RuntimeError(f"duplicate {what} for {_label(k)}")
                table[k] = fn
            return fn

        return deco

    return register


def require_all(table: dict[Any, Any], keys: Iterable[object], what: str) -> None:
    """Raise at import when some key has no handler (coverage is visible, never silently missing)."""
    missing = [k for k in keys if k not in table]
    if missing:
        raise RuntimeError(f"no {what} for {sorted(_label(k) for k in missing)}")
