"""A compact, exact set of receptive-field pairs ``(r, j)``.

Integer pairs are stored as one bit mask per jump: bit r of ``masks[j]`` is set when ``(r, j)`` is in
the set.  Growing every pair by ``r + a·j`` is then one shift per jump, and a union one OR — a
ResNet-152 carries a few hundred pairs per node, which this keeps cheap.  Pairs with a fractional r
or j (after upsampling) are kept as plain tuples; the global pair (∞, ∞) is a flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Union

__all__ = ["Pairs", "INF", "Num"]

INF = math.inf
Num = Union[int, Fraction, float]


def _int(x: Num) -> int | None:
    if isinstance(x, int):
        return x
    if isinstance(x, Fraction) and x.denominator == 1:
        return int(x)
    return None


def _low(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class Pairs:
    """An immutable set of (r, j) pairs; iterate for the tuples."""

    __slots__ = ("_masks", "_other", "_glob")

    def __init__(self, masks: dict[int, int] | None = None, other: frozenset[tuple[Num, Num]] = frozenset(),
                 glob: bool = False):
        self._masks = {j: m for j, m in (masks or {}).items() if m}
        self._other = other
        self._glob = glob

    @classmethod
    def of(cls, pairs: "Iterator[tuple[Num, Num]] | list[tuple[Num, Num]] | set[tuple[Num, Num]]") -> "Pairs":
        masks: dict[int, int] = {}
        other = set()
        glob = False
        for r, j in pairs:
            if r == INF:
                glob = True
                continue
            ri, ji = _int(r), _int(j)
            if ri is not None and ji is not None and ri >= 0:
                masks[ji] = masks.get(ji, 0) | (1 << ri)
            else:
                other.add((r, j))
        return cls(masks, frozenset(other), glob)

    # -- set operations ------------------------------------------------------------------------
    def grow(self, add: Num, factor: Num) -> "Pairs":
        """Each finite (r, j) -> (r + add·j, j·factor); the global pair stays global."""
        if type(add) is int and type(factor) is int and add >= 0 and not self._other:
            masks: dict[int, int] = {}
            for j, m in self._masks.items():
                nj = j * factor
                masks[nj] = masks.get(nj, 0) | (m << (add * j))
            return Pairs(masks, frozenset(), self._glob)
        grown = [(r + add * j, j * factor) for r, j in self.finite()]
        out = Pairs.of(grown)
        return Pairs(out._masks, out._other, self._glob)

    def __or__(self, other: "Pairs") -> "Pairs":
        masks = dict(self._masks)
        for j, m in other._masks.items():
            masks[j] = masks.get(j, 0) | m
        return Pairs(masks, self._other | other._other, self._glob or other._glob)

    # -- queries ---------------------------------------------------------------------------------
    def finite(self) -> Iterator[tuple[Num, Num]]:
        for j, m in self._masks.items():
            for r in _bits(m):
                yield (r, j)
        yield from self._other

    def __iter__(self) -> Iterator[tuple[Num, Num]]:
        yield from self.finite()
        if self._glob:
            yield (INF, INF)

    def __len__(self) -> int:
        return sum(bin(m).count("1") for m in self._masks.values()) + len(self._other) + int(self._glob)

    def __bool__(self) -> bool:
        return bool(self._masks or self._other or self._glob)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pairs):
            return (self._masks, self._other, self._glob) == (other._masks, other._other, other._glob)
        if isinstance(other, (set, frozenset)):
            return set(self) == set(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((frozenset(self._masks.items()), self._other, self._glob))

    def __repr__(self) -> str:
        return f"Pairs({sorted(self, key=lambda p: (float(p[0]), float(p[1])))})"

    @property
    def has_global(self) -> bool:
        return self._glob

    @property
    def min_r(self) -> Num | None:
        vals = [_low(m) for m in self._masks.values()] + [r for r, _ in self._other]
        if vals:
            return min(vals)
        return INF if self._glob else None

    @property
    def max_finite_r(self) -> Num | None:
        vals = [m.bit_length() - 1 for m in self._masks.values()] + [r for r, _ in self._other]
        return max(vals) if vals else None

    @property
    def min_finite_j(self) -> Num | None:
        vals = list(self._masks) + [j for _, j in self._other]
        return min(vals) if vals else None
