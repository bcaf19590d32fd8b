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
from .synth_cli import synth_command as _synth; app.command("synth")(_synth)  # noqa: E402, E702
from .train_cli import train_command as _train; app.command("train")(_train)  # noqa: E402, E702
from .train_cli import convert_command as _convert; app.command("convert")(_convert)  # noqa: E402, E702
from .train_cli import demo_command as _demo; app.command("demo")(_demo)  # noqa: E402, E702
from .quantize_cli import quantize_command as _quantize; app.command("quantize")(_quantize)  # noqa: E402, E702


# What `pip install "karyo[export]"` adds; the scanner PC's runtime-only install has none of them.
EXPORT_EXTRA_MODULES = frozenset({"tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common", "sympy"})


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXPORT_EXTRA_MODULES:
            raise
        typer.echo(f"error: karyo-export needs the training extra, and {missing} is not installed: pip install 'karyo[export]'", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
