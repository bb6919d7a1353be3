from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--overwrite", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture
def overwrite(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--overwrite"))


@pytest.fixture
def spec(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a spec text to a file and return its path."""

    def write(text: str, name: str = "net.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


@pytest.fixture(autouse=True)
def _private_latency_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's `convscope calibrate` results (analyze would attach local
    latency predictions and time missing layers): every test gets an empty latency cache."""
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path_factory.mktemp("latency-cache")))
