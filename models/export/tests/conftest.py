"""Shared pytest fixtures: the committed reference checkpoints and packages exported from them once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # refrunner, drift, peak_rss
# The source tree next to these tests wins over an installed (possibly older) copy.
sys.path.insert(0, str(HERE.parent))

FIXTURES = HERE.parents[1] / "fixtures"
ARCHS = sorted(p.parent.name for p in FIXTURES.glob("*/golden.json"))


def golden(arch: str) -> dict:
    return json.loads((FIXTURES / arch / "golden.json").read_text(encoding="utf-8"))


class Exports:
    """Exports each (arch, precision) once per test session."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple[str, str, int], Path] = {}

    def get(self, arch: str, precision: str = "fp32", accuracy_level: int = 4) -> Path:
        from moe_export.export import export
        from moe_export.quant import QuantConfig

        key = (arch, precision, accuracy_level)
        if key not in self.done:
            out = self.root / f"{arch}-{precision}-acc{accuracy_level}"
            export(FIXTURES / arch, out, QuantConfig(precision, 32, accuracy_level), progress=False)
            self.done[key] = out
        return self.done[key]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("packages"))


def pytest_configure(config):
    if not ARCHS:
        raise pytest.UsageError(f"no fixtures found under {FIXTURES} (expected */golden.json)")
