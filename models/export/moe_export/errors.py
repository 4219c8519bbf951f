"""The one exception type the exporter raises for bad input; the CLI prints it as a single line."""


class ExportError(Exception):
    """A problem with the input checkpoint, its config or the command line, described for the user."""
