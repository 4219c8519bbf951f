"""The exporter's third-party modules, checked before any is imported, so a system without them gets
one line naming the distribution package to install instead of a traceback.

`moectl models import` runs the exporter with the system python3 (no virtualenv); Debian 12 has
every module needed (safetensors and ml_dtypes are optional: moe_export.stnumpy stands in).
"""

from __future__ import annotations

import importlib.util
import sys

# module, oldest version tested, Debian package
REQUIRED = (
    ("numpy", (1, 24), "python3-numpy"),
    ("onnx", (1, 12), "python3-onnx"),
    ("tqdm", (4, 60), "python3-tqdm"),
)
MISSING_EXIT = 3


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def problems() -> list[str]:
    """One sentence for the missing modules, one per too old module (empty when everything is there)."""
    missing, old = [], []
    for module, oldest, package in REQUIRED:
        if importlib.util.find_spec(module) is None:
            missing.append((module, package))
            continue
        version = getattr(__import__(module), "__version__", "0")
        if _version(version) < oldest:
            want = ".".join(map(str, oldest))
            old.append(f"{package} {version} is too old (the exporter needs {module} >= {want})")
    if not missing:
        return old
    packages = " ".join(p for _, p in missing)
    modules = ", ".join(f"'{m}'" for m, _ in missing)
    verb, plural = ("is", "") if len(missing) == 1 else ("are", "s")
    return [f"{packages} {verb} not installed (Python module{plural} {modules} missing): "
            f"apt install {packages}", *old]


def require() -> None:
    """Exit with status 3 and one line per problem when a module is missing."""
    found = problems()
    if found:
        for line in found:
            print(f"moe_export: error: {line}", file=sys.stderr)
        raise SystemExit(MISSING_EXIT)
