"""Keep the default training inside its time budget on a slow CPU by shortening the schedule, not cutting it.

The default recipe (24 epochs) trains in 17 minutes on 2 cores of an Intel Xeon with AVX-512 VNNI
and in 48 on 2 cores of an AMD EPYC with AVX2 only (benchmarks/ACCURACY.md): the same command and
data, nearly three times the wall time. A lab runs the default and expects it to end when the README
says. Stopping a cosine schedule part-way would keep weights trained at a high learning rate, so the
schedule itself is re-planned: after each epoch the time an epoch takes here is measured, and when
fewer epochs than planned still fit before the deadline, the cosine is shortened to end at the last
one that fits, and training stops there. The plan only ever shrinks (a learning rate that rose again
would undo the decay), never below a quarter of the asked epochs, and every cut is printed and
recorded. A machine fast enough trains the very weights it trained before the budget existed. The
default budget guards the default recipe only: a user who asks for 48 epochs or a wider network
has chosen the time it takes (`resolve_budget`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Minutes a default `karyo-export train` may take: the goal on 2 cores (issue #7), per model trained.
DEFAULT_TIME_BUDGET_MIN = 30.0
# The fewest epochs a budget may leave, as a share of those asked: below it the model is not worth
# the time it did take, so the run goes over its budget instead, and says so.
MIN_EPOCH_SHARE = 0.25
# Seconds kept back after the last epoch for what `train_model` still does with the model (scoring
# the held-out crops, saving, the confusion matrix): fold 1 on 2 AVX2 cores spent 42 s outside its
# epochs in all, reading its 20,322 crops and scoring 4,054 held-out ones included.
AFTER_FIT_RESERVE_S = 30.0


def resolve_budget(requested: float | None, chosen: list[str]) -> tuple[float | None, str | None]:
    """The minutes a run keeps to (None: no budget) and, when none, why.

    `requested` None asks for the default: the budget guards the default recipe, the one a lab runs
    without thinking about time; once the user chose what the run costs (`chosen`, such as
    ["--epochs 48"]) they get every epoch of it. An explicit budget always holds; 0 switches it off.
    """
    if requested is not None:
        return (requested, None) if requested > 0 else (None, "switched off (--time-budget 0)")
    if chosen:
        return None, f"not applied to a recipe chosen by hand ({', '.join(chosen)}); --time-budget MIN sets one"
    return DEFAULT_TIME_BUDGET_MIN, None


def epoch_floor(asked: int) -> int:
    """The fewest epochs a budget may leave of `asked`."""
    return min(asked, max(1, math.ceil(asked * MIN_EPOCH_SHARE)))


def affordable_epochs(epoch_seconds: list[float], seconds_left: float, planned: int, floor: int) -> int:
    """How many epochs the run should have in all, given the epochs done and the seconds left before the deadline.

    The first epoch carries the graph tracing (on small data most of its time), so nothing is
    decided before a second epoch is done, and the first never counts; the mean (not the median)
    of the rest, because a shared machine's slow epochs are part of what the remaining epochs will
    cost too. Never more than `planned`, never fewer than `floor` or the epochs already done.
    """
    done = len(epoch_seconds)
    if done < 2:
        return planned
    per_epoch = steady_epoch_seconds(epoch_seconds)
    more = math.floor(max(0.0, seconds_left) / per_epoch) if per_epoch > 0 else planned
    return max(floor, done, min(planned, done + more))


def steady_epoch_seconds(epoch_seconds: list[float]) -> float:
    """Mean seconds per epoch, the first (tracing) left out once there are others."""
    steady = epoch_seconds[1:] or epoch_seconds
    return sum(steady) / len(steady)


@dataclass
class BudgetCut:
    """One shortening of the plan: after `after_epoch` epochs, `epochs` in all, epochs taking `epoch_seconds`."""

    after_epoch: int
    epochs: int
    epoch_seconds: float


@dataclass
class BudgetRecord:
    """What the budget did to one training, for train_config.json and the report."""

    minutes: float | None
    asked_epochs: int
    planned_epochs: int
    applied: bool = True
    note: str | None = None
    cuts: list[BudgetCut] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replannable_cosine(learning_rate: float, steps_per_epoch: int, epochs: int, alpha: float):
    """Keras' CosineDecay over `epochs`, whose end a budget can bring forward mid-run; returns (schedule, pace).

    The schedule runs the cosine at `pace` times the steps taken (a variable TensorFlow's compiled
    train step reads afresh each step; JAX's takes it in when traced, so `epoch_clock` traces it
    again after a cut): at 1.0, the default, the product is exact,
    so an uncut run trains the very weights CosineDecay(decay_steps=epochs * steps) gives; at 24/14
    the cosine's 24 epochs are covered in 14 and it holds at its floor after them.
    """
    import keras

    steps = max(1, epochs * steps_per_epoch)
    cosine = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=alpha)
    pace = keras.Variable(1.0, trainable=False, dtype="float32", name="cosine_pace")

    class PacedCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return cosine(keras.ops.cast(step, "float32") * pace)

        def get_config(self) -> dict[str, Any]:
            return cosine.get_config() | {"pace": float(pace.numpy())}

    return PacedCosine(), pace


def epoch_clock(record: BudgetRecord, deadline: float | None = None, pace=None, progress: bool = True):
    """A Keras callback that times every epoch (`.seconds`) and, given a `deadline` (perf_counter s),
    speeds up the schedule (`pace`, from `replannable_cosine`) and stops the fit so the epochs end by then."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds: list[float] = []
            self._pending: str | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._say()
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.seconds.append(now - self._start)
            if deadline is None:
                return
            planned = record.planned_epochs
            fits = affordable_epochs(self.seconds, deadline - now, planned, epoch_floor(record.asked_epochs))
            if fits < planned:
                per_epoch = steady_epoch_seconds(self.seconds)
                record.cuts.append(BudgetCut(len(self.seconds), fits, round(per_epoch, 1)))
                record.planned_epochs = fits
                self.shorten_schedule(fits)
                late = fits > len(self.seconds) + max(0.0, deadline - now) / per_epoch  # the floor, not the clock
                self._pending = budget_message(record, per_epoch, late) if progress else None
            if len(self.seconds) >= record.planned_epochs:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self._say()

        def _say(self) -> None:
            """Print a cut after Keras' line for the epoch that caused it (its logger runs after this callback)."""
            if self._pending:
                print(self._pending, file=sys.stderr, flush=True)
            self._pending = None

        def shorten_schedule(self, epochs: int) -> None:
            pace.assign(record.asked_epochs / epochs)
            if keras.config.backend() == "jax":
                # JAX's compiled step took the pace in as a constant when it was traced (measured: the
                # cut trained the same weights as a stop alone): trace it again, once per cut
                self.model.make_train_function(force=True)

    return EpochClock()


def budget_message(record: BudgetRecord, per_epoch: float, late: bool = False) -> str:
    """One line a user can act on: what was cut, why, and how to train the full schedule.

    `late`: fewer epochs than the floor fit, so the run will end after its budget."""
    over = (f"; fewer fit, but {record.planned_epochs} is the least this trains, so it will end after its "
            f"{minutes_text(record.minutes)}") if late else ""
    if len(record.cuts) > 1:
        return (f"time budget: now {record.planned_epochs} of the {record.asked_epochs} epochs fit "
                f"(an epoch takes {per_epoch:.0f} s here){over}")
    return (
        f"time budget: an epoch takes {per_epoch:.0f} s on this machine, so {record.planned_epochs} of the "
        f"{record.asked_epochs} epochs fit in {minutes_text(record.minutes)}; the learning rate now decays to epoch "
        f"{record.planned_epochs} and training ends there (--time-budget 0 trains all {record.asked_epochs}, "
        f"about {record.asked_epochs * per_epoch / 60:.1f} min of epochs here){over}"
    )


def minutes_text(minutes: float) -> str:
    """'1 minute', '30 minutes', '0.5 minutes'."""
    return f"{minutes:g} minute" + ("" if minutes == 1 else "s")


def fit_deadline(command_deadline: float, fits_left: int, now: float | None = None) -> float:
    """The perf_counter time by which one of the `fits_left` trainings still to run must end its epochs.

    The time left to the command's deadline is shared equally (a k-fold run trains k models in one
    command), less the reserve for what follows the fit.
    """
    now = time.perf_counter() if now is None else now
    return now + (command_deadline - now) / max(1, fits_left) - AFTER_FIT_RESERVE_S
