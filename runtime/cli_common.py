"""What every `karyo` command shares: user errors as one line and exit code 2, option choices, progress."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any, Callable, TypeVar

import typer

from .assembly import DEFAULT_TRISOMIES, TRISOMY_COSTS
from .progress import terminal_progress

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])


class ProviderChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class OrientationChoice(str, Enum):
    p_arm_up = "p-arm-up"
    any = "any"


# `--trisomies`: the settings the count prior has (TRISOMY_COSTS), so a new one needs no second list.
TrisomyChoice = Enum("TrisomyChoice", {name: name for name in TRISOMY_COSTS}, type=str)  # type: ignore[misc]
DEFAULT_TRISOMY_CHOICE = TrisomyChoice(DEFAULT_TRISOMIES)


TRISOMIES_HELP = ("Which full trisomies of the autosomes the count priors expect. viable (default): blood and amniotic "
                  "fluid, where only 13, 18 and 21 are seen, so a third X-sized chromosome leans to 47,XXX over 47,XX,+9; "
                  "any: bone marrow, tumours, miscarriages, where +8, +12 or +16 are common findings.")


ORIENTATION_HELP = ("p-arm-up: crops stand p arm up, as karyogram software cuts them; any: crops cut out of the "
                    "metaphase, each read as given and turned half a circle, the two reads averaged (a second pass of the "
                    "network). Default: the bundle's (any for a network trained with --vflip, else p-arm-up).")


def orientation_value(choice: "OrientationChoice | None") -> str | None:
    """The option's value, None when not given (the bundle then says which way up it reads)."""
    return None if choice is None else choice.value


def provider_line(classifier: Any, requested: str) -> str:
    """What ran, for the commands that read crops: under `auto` a CPU read says why it is not on CUDA,
    so a fallback is never silent."""
    why = f" ({classifier.cuda_reason})" if requested == "auto" and classifier.cuda_reason else ""
    return (f"provider: {classifier.provider}{why}; precision: {classifier.precision} ({classifier.precision_reason}); "
            f"orientation: {classifier.orientation}")


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(command: F) -> F:
    """Turn the errors a user can act on (bad bundle, no GPU, bad folder) into `error: ...` + exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .bundle import BundleError
        from .session import InferenceError, ProviderError

        try:
            return command(*args, **kwargs)
        except (BundleError, ProviderError, InferenceError, ValueError, OSError) as exc:
            raise fail(str(exc) or type(exc).__name__) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def stderr_progress(what: str) -> Callable[[int, int], None] | None:
    """A `done/total` counter on stderr, only when a person is watching (not in pipes or tests)."""
    return terminal_progress(what)


def short_float(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
