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
from .cli_classify import classify as _classify; app.command("classify")(_classify)  # noqa: E402, E702
from .cli_evaluate import evaluate as _evaluate; app.command("evaluate")(_evaluate)  # noqa: E402, E702
from .cli_info import info as _info; app.command("info")(_info)  # noqa: E402, E702
from .cli_bench import bench as _bench; app.command("bench")(_bench)  # noqa: E402, E702
from .cli_karyotype import karyotype as _karyotype; app.command("karyotype")(_karyotype)  # noqa: E402, E702
from .cli_audit import audit as _audit; app.command("audit")(_audit)  # noqa: E402, E702
from .cli_watch import watch as _watch; app.command("watch")(_watch)  # noqa: E402, E702


def main() -> None:
    app()


if __name__ == "__main__":
    main()
