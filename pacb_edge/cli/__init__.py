"""The `pacb-edge` command line (typer): the commands, their shared options and their output."""
