"""The Typer CLI: thin commands over the library."""
