"""Entry point for `python3 -m moe_export SRC_DIR OUT_DIR ...`."""

from moe_export.deps import require

require()  # before cli imports numpy and onnx

from moe_export.cli import main  # noqa: E402

raise SystemExit(main())
