"""Entry point for `python3 -m moe_export SRC_DIR OUT_DIR ...`."""

from moe_export.cli import main

raise SystemExit(main())
