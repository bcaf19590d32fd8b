"""`karyo-export`: the training-side command line. Commands live in their own modules; this file wires them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="karyo-export",
    help="Make synthetic chromosomes, train Keras classifiers and export them as verified ONNX bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- command registrations (one line each; keep this block at the end) ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
