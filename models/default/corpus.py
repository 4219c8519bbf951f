"""Extract the training corpus: Jane Austen's six novels from Debian's r-cran-janeaustenr package.

`python3 corpus.py OUT_DIR [--deb FILE]` downloads the .deb with `apt-get download` (unless --deb is
given), unpacks it with `dpkg-deb -x`, and reads the novels out of R's lazy-load data base
(`data/Rdata.rdb` / `Rdata.rdx`) without R: installing r-base-core would pull in ~700 packages for
what is a zlib-compressed XDR serialization of six character vectors. Writes OUT_DIR/corpus.txt
(paragraphs separated by blank lines, line breaks inside paragraphs joined) and OUT_DIR/LICENSE.txt
(the package's Debian copyright file).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

PACKAGE = "r-cran-janeaustenr"
VERSION = "1.0.0-1"
DEB_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
COPYRIGHT = "usr/share/doc/r-cran-janeaustenr/copyright"


class RFormatError(Exception):
    """The R data base is not in the shape this reader handles."""


class XdrReader:
    """Reads the subset of R's XDR serialization format (version 2/3) that data vectors use."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)
        self.refs: list = []

    def _int(self) -> int:
        raw = self.buf.read(4)
        if len(raw) != 4:
            raise RFormatError("truncated R serialization stream")
        return struct.unpack(">i", raw)[0]

    def _length(self) -> int:
        n = self._int()
        if n == -1:
            hi, lo = self._int(), self._int()
            n = (hi << 32) + lo
        return n

    def read(self):
        if self.buf.read(2) != b"X\n":
            raise RFormatError("not an XDR ('X') R serialization")
        version = self._int()
        self._int()  # writer's R version
        self._int()  # minimal reader R version
        if version == 3:
            self.buf.read(self._int())  # native encoding name
        elif version != 2:
            raise RFormatError(f"R serialization version {version} not supported")
        return self._item()

    def _item(self):
        flags = self._int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == 254:  # NILVALUE_SXP
            return None
        if kind == 255:  # REFSXP: index packed in the flags, or in the next int
            idx = flags >> 8
            return self.refs[(idx if idx else self._int()) - 1]
        if kind in (241, 242, 253, 251, 252, 247):  # base/empty/global env, missing, unbound
            return None
        if kind == 1:  # SYMSXP
            name = self._item()
            self.refs.append(name)
            return name
        if kind == 2:  # LISTSXP (pairlist): attributes, tag, car, cdr
            out = {}
            while True:
                if has_attr:
                    self._item()
                tag = self._item() if has_tag else None
                out[tag if tag is not None else len(out)] = self._item()
                nxt = self._int()
                if nxt & 0xFF == 254:
                    return out
                if nxt & 0xFF != 2:
                    raise RFormatError(f"pairlist continued by SEXP type {nxt & 0xFF}")
                has_attr, has_tag = bool(nxt & (1 << 9)), bool(nxt & (1 << 10))
        if kind == 9:  # CHARSXP
            n = self._int()
            return None if n == -1 else self.buf.read(n).decode("utf-8", errors="strict")
        if kind in (10, 13):  # LGLSXP, INTSXP
            n = self._length()
            value = list(struct.unpack(f">{n}i", self.buf.read(4 * n)))
        elif kind == 14:  # REALSXP
            n = self._length()
            value = list(struct.unpack(f">{n}d", self.buf.read(8 * n)))
        elif kind in (16, 19):  # STRSXP, VECSXP
            value = [self._item() for _ in range(self._length())]
        else:
            raise RFormatError(f"SEXP type {kind} not supported")
        if has_attr:
            attrs = self._item()
            if kind == 19 and isinstance(attrs, dict) and "names" in attrs:
                return dict(zip(attrs["names"], value))
        return value


def read_lazyload(data_dir: Path) -> dict[str, list]:
    """Every object of an R lazy-load data base (`Rdata.rdx` index + `Rdata.rdb` blobs)."""
    index = XdrReader(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).read()
    blob = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[offset : offset + length]
        size = struct.unpack(">I", chunk[:4])[0]
        raw = zlib.decompress(chunk[4:])
        if len(raw) != size:
            raise RFormatError(f"{name}: {len(raw)} bytes after zlib, header says {size}")
        out[name] = XdrReader(raw).read()
    return out


def paragraphs(lines: list) -> list[str]:
    """Join the novel's hard-wrapped lines into paragraphs; drop chapter headings."""
    paras, cur = [], []
    for line in lines + [""]:
        line = (line or "").strip()
        if line:
            cur.append(line)
            continue
        if cur:
            text = " ".join(" ".join(cur).replace("_", "").split())
            if not text.upper().startswith(("CHAPTER", "VOLUME")) and len(text) > 1:
                paras.append(text)
            cur = []
    return paras


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--deb", type=Path, help="use this .deb instead of downloading it")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=tmp, check=True)
            deb = next(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != DEB_SHA256:
            sys.exit(f"{deb}: sha256 {digest}, expected {DEB_SHA256} ({PACKAGE} {VERSION})")
        root = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        objects = read_lazyload(root / DATA_DIR)
        (args.out / "LICENSE.txt").write_text((root / COPYRIGHT).read_text())
    missing = [n for n in NOVELS if n not in objects]
    if missing:
        sys.exit(f"{PACKAGE}: objects {missing} not found (have {sorted(objects)})")
    text = "\n\n".join("\n\n".join(paragraphs(objects[n])) for n in NOVELS) + "\n"
    (args.out / "corpus.txt").write_text(text)
    print(f"{args.out / 'corpus.txt'}: {len(text)} chars, {len(text.split())} words")


if __name__ == "__main__":
    main()
