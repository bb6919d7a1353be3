"""The core analyses import and run without torch (and onnx): a user with only the spec front end
gets receptive fields, cost, analytic latency, plan comparison and design advice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxruntime", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
from convscope.cli import main
rc = main(sys.argv[1:])
assert not any(m.split(".")[0] in ("torch", "onnx", "onnxruntime") for m in sys.modules), "imported torch"
sys.exit(rc)
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_analyze_with_a_device_profile_needs_no_torch() -> None:
    p = run("analyze", "zoo:vgg16-cifar", "--device", "raspi4", "--json", "-")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["border_layer"] == "block3.2.conv" and d["latency"]["tier"] == "analytic"


def test_compare_and_suggest_need_no_torch() -> None:
    p = run("compare", "examples/camera/plan.yaml", "--device", "raspi4", "--json", "-")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["verdict"]["best"]
    p = run("suggest", "zoo:vgg11-cifar", "--input", "3,32,32", "--json", "-")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)


def test_a_pytorch_model_without_torch_is_a_clear_error() -> None:
    p = run("analyze", "tests/fixtures/vgg.py:vgg16", "--input", "3,32,32")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "torch" in p.stderr
