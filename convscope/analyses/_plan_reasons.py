"""Reasons for a deployment verdict, each derived from the numbers of the comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING

from convscope.units import fmt_count, fmt_mb, fmt_ms

if TYPE_CHECKING:
    from convscope.analyses.deployment import CandidateResult, Comparison

__all__ = ["reasons"]

SAME_COST = 0.9  # a specialist costing >= 90% of the big network's MACs per frame saves nothing worth having
UNPRODUCTIVE_NOTE = 0.05  # mention networks with at least 5% of their MACs in unproductive layers


def _px(shape: tuple[int, ...]) -> str:
    """The plan's input resolution as a reader says it: "224 px", or "224×160 px"."""
    h, w = shape[-2], shape[-1]
    return f"{h} px" if h == w else f"{h}×{w} px"


def _pct(x: float) -> str:
    """A share in percent with the digits it needs: 37%, 0.4%, <0.1%."""
    if x >= 9.5 or x == 0:
        return f"{x:.0f}%"
    return f"{x:.1f}%" if x >= 0.05 else "<0.1%"


def _band(c: "CandidateResult") -> str:
    return f"{fmt_ms(c.low_ms)}–{fmt_ms(c.high_ms)}"


def _lead(cmp: "Comparison") -> list[str]:
    v = cmp.verdict
    best = cmp.candidate(v.best)
    ranked = [c for c in cmp.ranked() if c.name != best.name]
    out = []
    where = "that meets the constraints" if cmp.constraints.to_dict() and v.meets_constraints else ""
    line = f"'{best.name}' is the fastest{(' ' + where) if where else ''}: {fmt_ms(best.latency_ms)} per frame " \
           f"({best.fps:.1f} fps) on {cmp.device}"
    if ranked and v.margin:
        nxt = min((c for c in ranked if c.name not in dict(v.failing)), key=lambda c: c.latency_ms, default=ranked[0])
        ratio = best.latency_ms and nxt.latency_ms / best.latency_ms
        line += (f", {ratio:.2f}× faster than '{nxt.name}' ({fmt_ms(nxt.latency_ms)})" if f"{ratio:.2f}" != "1.00" else
                 f", as fast as '{nxt.name}' ({fmt_ms(nxt.latency_ms)})")
    if any(n.lower_bound for n in best.networks):
        line += " — but its time is a lower bound: some of its ops are unknown or could not be timed (see its notes)"
    out.append(line)
    if v.tied_with:
        others = ", ".join(f"'{n}' ({_band(cmp.candidate(n))})" for n in v.tied_with)
        measured = any(n.measured_ms is not None for c in cmp.candidates for n in c.networks)
        out.append(f"but it is a tie: its predicted band {_band(best)} overlaps {others}; the prediction cannot "
                   "tell them apart" + (" — see the measured times" if measured else
                                        " — measure them (compare --measure)"))
    if not v.meets_constraints:
        out.append(f"no candidate meets the constraints ({', '.join(f'{k} {x:g}' for k, x in cmp.constraints.to_dict().items())}); "
                   f"'{best.name}' fails: {dict(v.failing)[best.name]}")
    for name, why in v.failing:  # every other candidate that fails, and why
        if v.meets_constraints or name != best.name:
            out.append(f"'{name}' does not meet the constraints: {why}")
    return out


def _biggest_single(cmp: "Comparison") -> "CandidateResult | None":
    singles = [c for c in cmp.candidates if c.kind == "single"]
    return max(singles, key=lambda c: c.macs_per_frame, default=None)


def _kind_notes(cmp: "Comparison") -> list[str]:
    out = []
    big = _biggest_single(cmp)
    for c in cmp.candidates:
        nets = c.networks
        if c.kind == "switch":
            nets = c.running  # a specialist the schedule never runs says nothing about the cost per frame
            cheapest = min(n.analysis.totals.macs for n in nets)
            if big is not None and cheapest >= SAME_COST * big.macs_per_frame:
                what = "as costly as" if cheapest <= big.macs_per_frame else "costlier than"
                dearest = max(n.analysis.totals.macs for n in nets)
                if dearest <= big.macs_per_frame or dearest < cheapest / SAME_COST:  # all alike
                    cost = (f"each is {what} the single network '{big.name}' ({fmt_count(cheapest)} vs "
                            f"{fmt_count(big.macs_per_frame)} MACs)")
                else:
                    cost = (f"even the cheapest is {what} the single network '{big.name}' ({fmt_count(cheapest)} vs "
                            f"{fmt_count(big.macs_per_frame)} MACs; the costliest {fmt_count(dearest)})")
                out.append(f"the specialists of '{c.name}' save nothing per frame: {cost}, and "
                           + (f"one of them is resident at a time ({fmt_mb(c.weight_bytes)})" if c.only_one else
                              f"{len(c.networks)} of them keep {fmt_mb(c.weight_bytes)} of weights resident"))
            elif big is not None:
                lo = 100 * cheapest / big.macs_per_frame
                hi = 100 * max(n.analysis.totals.macs for n in nets) / big.macs_per_frame
                share = _pct(lo) if _pct(lo) == _pct(hi) else f"{_pct(lo)}–{_pct(hi)}"
                held = (f"one specialist ({fmt_mb(c.weight_bytes)} of weights) stays resident and a change of "
                        "specialist loads the next" if c.only_one else
                        f"{fmt_mb(c.weight_bytes)} of weights stay resident")
                out.append(f"each specialist of '{c.name}' costs {share} of '{big.name}' per frame; only one runs per "
                           f"frame, but {held}")
        elif c.kind == "parallel":
            parts = " + ".join(fmt_ms(n.ms) for n in nets)
            line = f"'{c.name}' runs all {len(nets)} specialists on every frame: {parts} = {fmt_ms(c.latency_ms)}"
            if big is not None and c.latency_ms > big.latency_ms:
                line += f", slower than the one network '{big.name}' ({fmt_ms(big.latency_ms)})"
            out.append(line)
        elif c.kind == "trunk":
            trunk, heads = nets[0], nets[1:]
            run = f"'{c.name}' runs its {trunk.role} ({fmt_ms(trunk.ms)}) once per frame and "
            if c.only_one and len(heads) > 1:
                shares = c.weights[1:]
                how = "in equal shares" if max(shares) - min(shares) < 1e-9 else "as scheduled"
                line = run + f"one of its {len(heads)} heads ({', '.join(fmt_ms(h.ms) for h in heads)}), {how}"
            elif len(heads) == 1:
                line = run + f"its head ({fmt_ms(heads[0].ms)})"
            else:
                line = run + f"{len(heads)} heads ({' + '.join(fmt_ms(h.ms) for h in heads)})"
            out.append(line)
            a = trunk.analysis
            if a.unproductive_share[1] >= UNPRODUCTIVE_NOTE:
                un = a.unproductive_layers()
                out.append(f"the trunk of '{c.name}' is partly unproductive at {_px(cmp.input)}: "
                           f"{len(un)} layer(s) after its border layer {a.border_layer} hold "
                           f"{100 * a.unproductive_share[1]:.0f}% of its MACs")
        elif c.kind == "cascade":
            gate, expert = nets
            rate = c.weights[1]  # the plan's rate (the expert may take no time at all: folded to constants)
            head = f"'{c.name}': the gate ({fmt_ms(gate.ms)}) runs on every frame and the expert ({fmt_ms(expert.ms)})"
            if rate == 0:
                out.append(f"{head} never (rate 0): {fmt_ms(c.latency_ms)} per frame")
            elif rate >= 0.9995:
                out.append(f"{head} on every frame too (rate 1): {fmt_ms(c.latency_ms)} per frame, the gate saving "
                           "nothing")
            else:
                out.append(f"{head} on {_pct(100 * rate)} of them: {fmt_ms(c.latency_ms)} expected, but "
                           f"{fmt_ms(c.worst_ms)} on a frame the gate passes — size the frame budget on the worst "
                           "case if every frame must be on time")
    return out


def _unproductive_notes(cmp: "Comparison") -> list[str]:
    seen: set[str] = set()
    out = []
    for c in cmp.candidates:
        for n in c.networks:
            a = n.analysis
            key = f"{n.ref}@{a.input}"
            if key in seen or c.kind == "trunk" and n is c.networks[0]:
                continue
            seen.add(key)
            if a.unproductive_share[1] >= UNPRODUCTIVE_NOTE:
                where = _px(cmp.input) + (" (the plan's input, behind the trunk)" if c.kind == "trunk" else "")
                out.append(f"at {where}, {n.ref} has {100 * a.unproductive_share[1]:.0f}% of its MACs in "
                           f"unproductive layers after its border layer {a.border_layer}; `convscope suggest` shows "
                           "what cutting them buys")
    return out


def reasons(cmp: "Comparison", swaps: list[tuple[str, str]] | None) -> list[str]:
    out = _lead(cmp) + _kind_notes(cmp) + _unproductive_notes(cmp)
    if swaps is not None:
        if not swaps:
            out.append("measured here: the predicted ranking held (pairs whose bands or measured spreads overlap "
                       "count as ties)")
        else:
            pairs = ", ".join(f"'{a}' vs '{b}'" for a, b in swaps)
            out.append(f"measured here: the prediction ordered {pairs} the other way round")
    if cmp.interrupted:
        left = [c.name for c in cmp.candidates if c.measured_ms is None]
        out.append("measurement interrupted (Ctrl-C): " + (f"{', '.join(left)} not measured; " if left else "")
                   + "the predictions are complete")
    return out
