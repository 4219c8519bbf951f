"""Per shape: the random checkpoint, its moed packages (moe_export) and GGUFs (F16, then llama-quantize).

Everything is cached under WORK/<shape>-s<seed>/ with a stamp per artefact: a moed package is
exported again when the exporter's sources change (so the benchmark follows whatever main
becomes), a GGUF when llama.cpp's version or this directory's generator changes. The checkpoint
and the F16 GGUF are deleted once every artefact exists (unless --keep-checkpoint): they are the
largest files and are regenerated deterministically when needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from checkpoint import write_checkpoint
from ckpt_gguf import write_gguf
from shapes import Shape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GGUF_TYPES = {"int4": "Q4_0", "int4-dense4": "Q4_0", "int4-b64s": "Q4_0", "int4-b64s-head4": "Q4_0",
              "int8": "Q8_0"}
# moe_export flags per moed quantization. `int4` is the exporter's default int4 policy (attention,
# shared experts, head and embedding at 8 bits); `int4-dense4` puts attention and dense MLPs at 4
# bits too, as llama.cpp's Q4_0 does (its head is Q6_K, ours stays int8). `int4-b64s` is that in
# blocks of 64 without zero points: 4.5 bits per 4-bit weight, Q4_0's own size (block 32 with
# zero points and fp32 scales is 5.125), 8.5 per 8-bit one; `int4-b64s-head4` puts the head at 4
# bits too (below Q6_K; the drift of these layouts is models/export/README.md's).
EXPORT_ARGS = {
    "int4-dense4": ["--quant", "int4", "--dense-quant", "int4"],
    "int4-b64s": ["--quant", "int4", "--dense-quant", "int4", "--block-size", "64", "--symmetric"],
    "int4-b64s-head4": ["--quant", "int4", "--dense-quant", "int4", "--head-quant", "int4",
                        "--block-size", "64", "--symmetric"],
}
# Both engines cache keys and values in f16, as llama-bench does by default (MLA caches stay f32).
CACHE_ARGS = ["--kv-cache", "float16"]


def export_args(quant: str) -> list[str]:
    return [*EXPORT_ARGS.get(quant, ["--quant", quant]), *CACHE_ARGS]


def _tree_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for root in paths:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _stamped(path: Path, stamp: str) -> bool:
    return path.exists() and (path.parent / (path.name + ".stamp")).is_file() and \
        (path.parent / (path.name + ".stamp")).read_text() == stamp


def _stamp(path: Path, stamp: str) -> None:
    (path.parent / (path.name + ".stamp")).write_text(stamp)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


class Artefacts:
    def __init__(self, shape: Shape, work: Path, seed: int, llama_bin: Path, llama_version: str):
        self.shape = shape
        self.dir = work / f"{shape.name}-s{seed}"
        self.seed = seed
        self.llama_bin = llama_bin
        self.ckpt = self.dir / "checkpoint"
        self.f16 = self.dir / "model-f16.gguf"
        ckpt = _tree_hash([HERE / "shapes.py", HERE / "checkpoint.py"])
        self.exporter_stamp = f"moe_export {_tree_hash([REPO / 'models' / 'export' / 'moe_export'])} checkpoint {ckpt}"
        self.gguf_stamp = f"llama.cpp {llama_version} checkpoint {ckpt} writer {_tree_hash([HERE / 'ckpt_gguf.py'])}"

    def package(self, quant: str) -> Path:
        return self.dir / f"moed-{quant}"

    def gguf(self, gtype: str) -> Path:
        return self.dir / f"model-{gtype}.gguf"

    def _checkpoint(self) -> None:
        if not (self.ckpt / "model.safetensors").is_file():
            print(f"peer: {self.shape.name}: writing the random checkpoint", file=sys.stderr)
            write_checkpoint(self.ckpt, self.shape.config, self.seed)

    def ensure(self, quants: list[str], gguf_types: list[str], gguf_module, keep_checkpoint: bool) -> dict:
        """Builds what is missing or stale; returns {artefact: bytes on disk}."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for quant in quants:
            pkg = self.package(quant)
            # The stamp lives beside the package: moed checks the files inside against the manifest.
            if not (_stamped(pkg, self.exporter_stamp) and (pkg / "manifest.json").is_file()):
                self._checkpoint()
                flags = export_args(quant)
                print(f"peer: {self.shape.name}: moe_export {' '.join(flags)}", file=sys.stderr)
                shutil.rmtree(pkg, ignore_errors=True)
                subprocess.run([sys.executable, "-m", "moe_export", str(self.ckpt), str(pkg), *flags, "--quiet"],
                               check=True)
                _stamp(pkg, self.exporter_stamp)
        for gtype in gguf_types:
            out = self.gguf(gtype)
            if _stamped(out, self.gguf_stamp):
                continue
            if not _stamped(self.f16, self.gguf_stamp):
                self._checkpoint()
                print(f"peer: {self.shape.name}: writing the F16 GGUF", file=sys.stderr)
                write_gguf(self.ckpt, self.f16, gguf_module)
                _stamp(self.f16, self.gguf_stamp)
            print(f"peer: {self.shape.name}: llama-quantize {gtype}", file=sys.stderr)
            tmp = out.with_suffix(".tmp")
            log = self.dir / f"quantize-{gtype}.log"
            with open(log, "w") as f:
                done = subprocess.run([str(self.llama_bin / "llama-quantize"), str(self.f16), str(tmp), gtype,
                                       str(os.cpu_count() or 1)], check=False, stdout=f,
                                       stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"llama-quantize {gtype} failed (exit {done.returncode}); see {log}")
            tmp.replace(out)
            _stamp(out, self.gguf_stamp)
        if not keep_checkpoint:
            shutil.rmtree(self.ckpt, ignore_errors=True)
            self.f16.unlink(missing_ok=True)
            (self.dir / (self.f16.name + ".stamp")).unlink(missing_ok=True)
        sizes = {f"moed {q}": _size(self.package(q)) for q in quants}
        sizes.update({f"llama.cpp {g}": _size(self.gguf(g)) for g in gguf_types})
        return sizes
