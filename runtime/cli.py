"""`karyo`: the scanner-PC command line. Commands live in their own modules; this file wires them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="karyo",
    help="Classify, evaluate and karyotype G-banded chromosome crops with a karyo model bundle (offline).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- command registrations (one line each; keep this block at the end) ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
