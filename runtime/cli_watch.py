"""`karyo watch`: leave karyo running on the scanner PC; each cell the scanner exports is called once
it is whole, its results written where a LIMS or a person picks them up (``karyo.runtime.watch``).

One line per cell on stdout as `karyo karyotype` prints it, and the patient's karyotype so far after
each of their cells; errors on stderr, one line each, and the watcher goes on. `--once` calls what is
ready and stops (exit 1 when a crop or a cell failed), for a scheduled task instead of a service.
A service manager stops it with SIGTERM, a person or a Windows service wrapper with Ctrl-C: the cell
being called is finished and written first (a second Ctrl-C stops at once; nothing is torn, since
every file is written whole or not at all, and a cell left unwritten is called at the next start).
The list of patients (OUT/index.html) is written when it starts, so there is a page to open at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from .case_summary import case_line
from .cli_common import (
    DEFAULT_TRISOMY_CHOICE, ORIENTATION_HELP, TRISOMIES_HELP, OrientationChoice, PrecisionChoice, ProviderChoice,
    TrisomyChoice, fail, orientation_value, provider_line, user_errors,
)
from .cli_karyotype import cell_line
from .karyotype import AssemblyPriors
from .karyotyper import error_text
from .review_pages import INDEX_PAGE
from .watch import DEFAULT_SETTLE_S, CellWatcher, WatchEvent


def event_lines(event: WatchEvent) -> list[tuple[str, bool]]:
    """What one event prints: (text, to stderr)."""
    if event.status == "failed":
        return [(f"error: {event.error}; left until its crops change", True)]
    if event.status == "changed":
        return [(f"{event.cell.key}: changed while being read; called once it settles", True)]
    result = event.result
    lines = [(f"error: {error_text(p)}", True) for p in result.errors] + [(f"error: {p}", True) for p in event.problems]
    if result.call is None:
        return lines + [(f"error: {event.cell.key}: no readable crops", True)]
    if result.orientation_hint is not None:
        lines.append((f"warning: {event.cell.key}: {result.orientation_hint}", True))
    lines.append((cell_line(event.cell.key, result.call, failed=len(result.errors),
                            turned=sum(p.turned for p in result.readable), relabelled=len(result.corrections)), False))
    if event.case is not None:
        lines.append((case_line(event.case), False))
    return lines


@user_errors
def watch(
    bundle: Path = typer.Argument(..., help="Bundle folder (normal24 or seed32 labels)."),
    inbox: Path = typer.Argument(..., help="Where the scanner writes cells: INBOX/PATIENT/CELL/*.png (or INBOX/CELL/*.png)."),
    out: Path = typer.Option(..., "--out", help="Results: OUT/<cell>/karyotype.json and karyogram.png, OUT/<patient>/case.json and case.html, OUT/index.html."),
    settle: float = typer.Option(DEFAULT_SETTLE_S, "--settle", min=0.0,
                                 help="Seconds a cell must stay unchanged before it is called."),
    ready_file: Optional[str] = typer.Option(None, "--ready-file",
                                             help="Call a cell only once this file is in it (a scanner's 'done' marker)."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between looks at the inbox."),
    once: bool = typer.Option(False, "--once", help="Call what is ready now, then stop."),
    karyograms: bool = typer.Option(True, "--karyograms/--no-karyograms", help="Draw each cell's karyogram PNG."),
    precision: PrecisionChoice = typer.Option(PrecisionChoice.auto, "--precision", help="auto: fp16 on CUDA, int8 on CPU, else fp32."),
    provider: ProviderChoice = typer.Option(ProviderChoice.auto, "--provider", help="auto uses CUDA when it really works."),
    orientation: Optional[OrientationChoice] = typer.Option(None, "--orientation", help=ORIENTATION_HELP),
    trisomies: TrisomyChoice = typer.Option(DEFAULT_TRISOMY_CHOICE, "--trisomies", help=TRISOMIES_HELP),
) -> None:
    """Call each cell the scanner exports, once it is whole; results as files, one line per cell."""
    if not inbox.is_dir():
        raise fail(f"{inbox}: no such folder (the inbox the scanner writes cells into)")
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: not a folder")
    from .karyotyper import Karyotyper

    karyotyper = Karyotyper(bundle, precision=precision.value, provider=provider.value,
                            orientation=orientation_value(orientation), trisomies=trisomies.value,
                            priors=AssemblyPriors.for_trisomies(trisomies.value))
    watcher = CellWatcher(karyotyper, inbox, out, settle_s=settle, ready_file=ready_file, karyograms=karyograms)
    out.mkdir(parents=True, exist_ok=True)
    watcher.write_pages()
    classifier = karyotyper.classifier
    if getattr(classifier, "warning", None):
        typer.echo(f"warning: {classifier.warning}", err=True)
    typer.echo(provider_line(classifier, provider.value), err=True)
    present = watcher.cells()
    done = sum(watcher.is_called(cell) for cell in present)
    when = f"once {ready_file} is in it" if ready_file else f"once nothing in it has changed for {settle:g} s"
    typer.echo(f"{inbox}: {len(present)} cells, {done} already called in {out}; a cell is called {when}"
               + ("" if once else "; Ctrl-C stops"), err=True)
    typer.echo(f"patients, newest first: {(out / INDEX_PAGE).absolute().as_uri()}", err=True)
    failures = called = 0
    stop = threading.Event()  # set by SIGTERM or Ctrl-C: the cell in hand is finished, then the watcher stops

    def request_stop(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:  # Ctrl-C twice: now; an unwritten cell is called next start
            raise KeyboardInterrupt
        stop.set()
        typer.echo("stopping once the cell in hand is written" + (" (Ctrl-C again: now)" if signum == signal.SIGINT else ""),
                   err=True)

    # Ctrl-C is also how Windows service wrappers (NSSM, say) ask a console program to stop
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            for cell in watcher.ready():
                event = watcher.call(cell)
                for text, err in event_lines(event):
                    typer.echo(text, err=err)
                called += event.status == "called"
                if event.status == "failed" or event.problems or (
                        event.result is not None and (event.result.errors or event.result.call is None)):
                    failures += 1
                if stop.is_set():
                    break
            if once:
                break
            stop.wait(interval)
    except KeyboardInterrupt:
        stop.set()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop.is_set():
        typer.echo(f"stopped: {called} cells called", err=True)
        return
    later = len(watcher.waiting())
    if later:
        typer.echo(f"{later} cells not ready yet (still being written), left for a later run", err=True)
    if failures:
        raise typer.Exit(1)
