"""Golden JSON (FORMATS.md §4) for a few zoo networks at 32 and 224 px; `pytest --overwrite` rewrites
them.  Invariants: rows add up to the totals; the shares are those of the flagged rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convscope.api import analyze_resolutions

GOLDEN = Path(__file__).parent / "golden"
CASES = [(n, r) for n in ("vgg16-cifar", "resnet18-imagenet", "mobilenetv2", "dilated-context") for r in (32, 224)]


@pytest.mark.parametrize("name,res", CASES)
def test_golden_json(name: str, res: int, overwrite: bool) -> None:
    (a,) = analyze_resolutions(f"zoo:{name}", [res])
    data = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    path = GOLDEN / f"{name}-{res}.json"
    if overwrite or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        if not overwrite:
            pytest.fail(f"{path.name} was missing and has been written; check it in")
    assert data == json.loads(path.read_text())


@pytest.mark.parametrize("name,res", CASES)
def test_rows_add_up_to_the_totals(name: str, res: int) -> None:
    (a,) = analyze_resolutions(f"zoo:{name}", [res])
    d = a.to_dict()
    rows = d["layers"]
    assert sum(r["params"] for r in rows) == d["totals"]["params"]
    assert sum(r["macs"] for r in rows) == d["totals"]["macs"]
    assert sum(r["elementwise_ops"] for r in rows) == d["totals"]["elementwise_ops"]
    assert sum(r["bytes_read"] + r["bytes_written"] for r in rows) == d["totals"]["bytes_moved"]
    assert d["totals"]["weight_bytes"] == 4 * d["totals"]["params"]
    un = [r for r in rows if r["unproductive"]]
    p = sum(r["params"] for r in un) / d["totals"]["params"]
    m = sum(r["macs"] for r in un) / d["totals"]["macs"]
    assert d["unproductive_share"] == pytest.approx({"params": p, "macs": m})


def test_schema_fields_scripts_rely_on() -> None:
    (a,) = analyze_resolutions("zoo:resnet18-cifar", [32])
    d = a.to_dict()
    assert d["schema_version"] == 1 and d["model"] == "resnet18-cifar" and d["input"] == [3, 32, 32]
    assert set(d["totals"]) >= {"params", "macs", "weight_bytes", "peak_activation_bytes"}
    assert set(d["unproductive_share"]) == {"params", "macs"}
    assert len(d["feasible_resolution"]) == 2 and isinstance(d["unknown_ops"], list)
    row = d["layers"][0]
    assert row["name"] == "conv1" and row["op"] == "conv"
    assert row["kernel"] == [3, 3] and row["stride"] == [1, 1] and row["dilation"] == [1, 1] and row["groups"] == 1
    assert row["out_shape"] == [64, 32, 32] and row["params"] == 1728 and row["macs"] == 1728 * 32 * 32
    assert row["rf_min"] == [3, 3] and row["rf_max"] == [3, 3] and row["jump"] == [1, 1]
    assert row["unproductive"] is False
    fc = a.layer("fc").to_dict()
    assert fc["rf_max"] == [None, None]  # global: JSON has no infinity
