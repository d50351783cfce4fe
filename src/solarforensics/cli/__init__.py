"""The command line: `app` (the Typer app and its shared options), one module per command group, and `main`, the one
place where errors become one-line messages and exit codes."""
