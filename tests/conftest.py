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
