"""Command line: `python3 -m moe_export SRC_DIR OUT_DIR [--quant ...]`; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moe_export.errors import ExportError
from moe_export.quant import CACHE_DTYPES, PRECISIONS, PackageQuant, QuantConfig, package_quant


def block_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"block size must be an integer, got '{text}'") from None
    if value < 16 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"block size must be a power of two >= 16, got {value}")
    return value


def accuracy_level(text: str) -> int:
    if text not in ("0", "1", "2", "3", "4"):
        raise argparse.ArgumentTypeError(f"accuracy level must be 0..4, got '{text}'")
    return int(text)


def quant_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--quant", choices=PRECISIONS, default=default,
                        help="storage of the package's weights: routed experts, and unless overridden below "
                        f"attention projections, shared experts, dense MLPs, head and embedding (default {default})")
    parser.add_argument("--dense-quant", choices=PRECISIONS,
                        help="storage of attention projections, shared experts and dense MLPs "
                        "(default --quant, int8 when --quant is int4)")
    parser.add_argument("--head-quant", choices=PRECISIONS,
                        help="storage of the LM head (default --quant, int8 when --quant is int4)")
    parser.add_argument("--embed-quant", choices=PRECISIONS,
                        help="storage of the embedding table (default --quant, int8 when --quant is int4)")
    parser.add_argument("--symmetric", action="store_true",
                        help="int8/int4: symmetric blocks without zero points (default asymmetric)")
    parser.add_argument("--block-size", type=block_size, default=32,
                        help="int8/int4: quantization block over the input dimension (default 32)")
    parser.add_argument("--accuracy-level", type=accuracy_level, default=4,
                        help="int8/int4: MatMulNBits accuracy_level; 4 = int8 compute, fastest on CPU (default 4)")
    parser.add_argument("--kv-cache", choices=CACHE_DTYPES, default="float32",
                        help="what MHA/GQA attention caches: float16 streams half the bytes per cached token "
                        "(as llama.cpp's default f16 cache), rounding keys, values and queries to half; "
                        "MLA (DeepSeek) caches stay float32 (default float32)")


def package_quant_from_args(args: argparse.Namespace) -> PackageQuant:
    qc = QuantConfig(args.quant, args.block_size, args.accuracy_level, args.symmetric)
    return package_quant(qc, dense=args.dense_quant, head=args.head_quant, embed=args.embed_quant,
                         cache=args.kv_cache)


def fusion_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unfused-router", action="store_true",
                        help="a router graph per MoE layer instead of router logits from the attention graph")


def progress_line(done: int, total: int, name: str) -> None:
    print(f"graph {done}/{total} {name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe_export", description="Export a Hugging Face MoE checkpoint "
                                     "to a moed model package (models/FORMAT.md).")
    parser.add_argument("src", metavar="SRC_DIR", type=Path, help="checkpoint folder (config.json, *.safetensors)")
    parser.add_argument("out", metavar="OUT_DIR", type=Path, help="package folder to write")
    quant_args(parser, "fp32")
    fusion_args(parser)
    parser.add_argument("--name", help="package name for the manifest (default: SRC_DIR's name)")
    parser.add_argument("--force", action="store_true", help="replace the package already in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--progress-lines", action="store_true",
                        help="instead of a progress bar, print 'graph I/N NAME' on stdout as each graph starts "
                        "(what `moectl models import` reads)")
    args = parser.parse_args(argv)
    from moe_export.export import export  # after parsing, so --help stays fast

    progress = progress_line if args.progress_lines else not args.quiet
    try:
        manifest = export(args.src, args.out, package_quant_from_args(args),
                          name=args.name, force=args.force, progress=progress,
                          fuse_router=not args.unfused_router)
    except ExportError as err:
        print(f"moe_export: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. disk full or permissions while writing the package
        print(f"moe_export: error: {err}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"wrote {args.out} ({len(manifest['files'])} files, {total / 1e6:.1f} MB)")
    return 0
