"""Karyotype assembly: the jointly most likely labelling of one cell's crops.

A classifier labels crops one at a time; a cell is a set. Two crops that both look most like 21
while no crop was given 22 are, jointly, far more likely a 21 and a 22 than a trisomy 21 plus a
lost 22. Assembly makes that trade exactly: every crop gets one chromosome "slot", and the
total cost

    sum over crops of -ln p(assigned label)  +  sum over chromosomes of P(observed copies)

is minimized by a min-cost assignment (``karyo.runtime.assignment``). The count prior P is
convex in the number of copies, so it is encoded as per-slot *marginal* costs (slot k costs
P(k) - P(k-1)) and a plain assignment fills slots in order. Sex chromosomes are not separable
(a second X is normal without a Y and an anomaly with one), so they are
modelled jointly: the cell has one of six sex complements (XX, XY, X, XXY, XYY, XXX, each with
a prior cost); copies below it were lost (``loss_cost`` each), copies above it are extras. The
optimum over all complements is exact (see :func:`assemble_cell` for how it avoids six solves).

Prior costs (nats, i.e. -ln of a probability; defaults in :class:`AssemblyPriors`):
- a copy missing from the slide (``loss_cost`` 3.0 = -ln 0.05): real cells lose a chromosome
  or two in spreading and cutting (one of the study data sets averages ~43 of 46 crops per cell,
  i.e. ~5 % of copies missing), so a missing copy is cheap enough that assembly never invents
  relabelings to fill gaps, yet costly enough that two crops fighting over one pair resolve.
- a third copy: 4.0 (-ln ~0.02) for 13, 18 and 21, the trisomies seen in referral populations;
  8.0 (-ln ~0.0003) for any other autosome. A full trisomy of those is not viable: a blood or
  amniotic-fluid karyotype shows one far more rarely than a 47,XXX (about 1 in 1,000 girls), so
  a cell with a third X-sized chromosome leans to XXX by 2.7 nats (8.7 against 6.0) that the
  crop's evidence must overturn. At 6.0 the lead was 0.7, and the 47,XXX cell of the release's
  five folds, whose third X reads 0.81 as a 9, was called 47,XX,+9. Still finite: a crop that
  plainly is a third 8 is called +8, since any other label costs its evidence (about 5 nats for a
  crop at 0.9) plus that chromosome's own count cost. Where such trisomies are common findings
  (bone marrow, tumours, miscarriages: +8, +12, +16), ``AssemblyPriors.for_trisomies("any")``
  prices them at 6.0 (TRISOMY_COSTS). The k-th copy (k > 3) costs the trisomy cost plus
  ``extra_copy_cost`` 6.0 x (k - 3): convex, so slots fill in order, and finite, so every cell
  stays assignable.
- sex complements: XX and XY 0.7 (-ln 0.5); X and XXY 5.0; XYY and XXX 6.0 (-ln ~0.0025); a sex
  chromosome beyond the complement costs ``sex_extra_cost`` 8.0 (+2 per further copy).
The trade-offs follow: a confident crop (p 0.99) is moved to fill a pair only when the swap
costs less than a trisomy plus a loss (4 + 3 = 7 nats for a third 13, 18 or 21, 11 for another
autosome, i.e. when its probability for the pair it fills is above ~0.1 % or ~0.002 %); a 47-crop
cell must place one extra copy somewhere, and puts it where the crops' evidence says.

Structural classes (seed32) are copies of their parent chromosome (:func:`labels.chromosome_of`):
``del(5)(p14)`` + ``5`` is a normal pair count; within a chromosome's slot a crop takes its
most probable label of that chromosome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .assignment import AssignmentState, solve_assignment_state
from .labels import AUTOSOMES, NORMAL24, LabelScheme, chromosome_of

VIABLE_TRISOMIES: tuple[str, ...] = ("13", "18", "21")
# What a full trisomy of any other autosome costs, by what the lab karyotypes (`karyo karyotype
# --trisomies`): "viable" for blood and amniotic fluid, where such a trisomy is not seen alive (the
# module docstring); "any" for bone marrow, tumours and miscarriages, where +8, +12 or +16 are
# common findings (the value every release up to the fortieth session used).
TRISOMY_COSTS: dict[str, float] = {"viable": 8.0, "any": 6.0}
DEFAULT_TRISOMIES = "viable"
# The setting of constitutional work (blood, amniotic fluid): a patient's mosaic is written `mos`
# (``karyo.runtime.case_summary``); under the others the lines stand without it.
CONSTITUTIONAL_TRISOMIES = "viable"
SEX_COMPLEMENTS: tuple[str, ...] = ("XX", "XY", "X", "XXY", "XYY", "XXX")


@dataclass(frozen=True)
class AssemblyPriors:
    """Count-prior costs in nats (see the module docstring for why these values)."""

    loss_cost: float = 3.0
    viable_trisomy_cost: float = 4.0
    trisomy_cost: float = TRISOMY_COSTS[DEFAULT_TRISOMIES]
    extra_copy_cost: float = 6.0
    sex_costs: dict[str, float] = field(
        default_factory=lambda: {"XX": 0.7, "XY": 0.7, "X": 5.0, "XXY": 5.0, "XYY": 6.0, "XXX": 6.0}
    )
    sex_extra_cost: float = 8.0
    review_margin: float = 0.2
    # Flag two crops when exchanging their labels is at least 1/odds as likely as the call (1: off).
    # On five case-wise folds (benchmarks/ACCURACY.md, earlier releases), the exchanges inside 10:1
    # flag 1.0% of crops and hold 44 of the 141 errors left after assembly; the two margin rules
    # flag 2.4% for 45.
    review_swap_odds: float = 10.0
    # Flag a crop when labelling it otherwise on its own, counts and all (a call of another karyotype:
    # 47,XXX for 47,XX,+9), is at least 1/odds as likely as the call (1: off). Measured like the
    # exchange rule: benchmarks/ACCURACY.md, Where the goals stand.
    review_recount_odds: float = 10.0
    prob_floor: float = 1e-9

    def __post_init__(self) -> None:
        # the slot encoding is exact only for count priors convex in the number of copies
        if self.loss_cost < 0 or self.extra_copy_cost < 0:
            raise ValueError("loss_cost and extra_copy_cost must be >= 0")
        if min(self.viable_trisomy_cost, self.trisomy_cost, self.sex_extra_cost) < -self.loss_cost:
            raise ValueError("a third copy cannot cost less than a missing copy saves (convex count prior)")
        for name in ("review_swap_odds", "review_recount_odds"):
            if getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)}: use 1 (off) or more, like 10")

    @classmethod
    def for_trisomies(cls, trisomies: str, **fields: Any) -> "AssemblyPriors":
        """Priors for a lab that sees only viable trisomies (13, 18, 21) or any (TRISOMY_COSTS)."""
        if trisomies not in TRISOMY_COSTS:
            raise ValueError(f"trisomies {trisomies!r}: use one of {', '.join(TRISOMY_COSTS)}")
        return cls(trisomy_cost=TRISOMY_COSTS[trisomies], **fields)

    def trisomy(self, chromosome: str) -> float:
        return self.viable_trisomy_cost if chromosome in VIABLE_TRISOMIES else self.trisomy_cost


@dataclass(frozen=True)
class CropAssignment:
    """One crop's place in the assembled cell. `review`: assembly overrode top-1, top-1 was close, or
    exchanging labels with another crop of the cell (`swap_with`, its index) is nearly as likely.

    `fragment`: the object is far too small to be a whole chromosome of its cell
    (``karyo.runtime.cell_size.fragment_mask``); it fills no slot, is not counted, keeps its top-1
    label only as a hint, and is always up for review.

    `alternative` (crops up for review only): the label the reviewer should weigh against `label`.
    A red box alone says "look here" but not "as what"; the answer differs by why the crop was
    flagged: the partner's label for a possible swap, else the most probable other label (the
    network's own top-1 where assembly overrode it, the runner-up of a close call).

    `joined`: the cell reads one chromosome short and this crop's area fits its own chromosome and
    the missing one (`alternative`) together: two chromosomes touching or overlapping may have been
    cut as one object (``karyo.runtime.karyotype.call_cell``).

    `corrected`: a person labelled this crop on review (``karyotype_cell(pinned=...)``); its label
    is theirs, not the network's, and the karyogram and the JSON say so."""

    index: int
    label: str
    probability: float
    top_label: str
    top_probability: float
    review: bool
    path: str | None = None
    fragment: bool = False
    swap_with: int | None = None
    alternative: str | None = None
    joined: bool = False
    corrected: bool = False

    @property
    def check_against(self) -> str | None:
        """What a reviewer weighs this crop against, as the karyogram and the plain output write it:
        "5" (the alternative label) or "+21" (a 21 that may be joined to it); None without one."""
        if self.alternative is None:
            return None
        return f"+{self.alternative}" if self.joined else self.alternative

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "probability": self.probability, "review": self.review,
                "top_label": self.top_label, "top_probability": self.top_probability, "fragment": self.fragment,
                "swap_with": self.swap_with, "alternative": self.alternative, "joined": self.joined,
                "corrected": self.corrected}


@dataclass(frozen=True)
class Assembly:
    assignments: list[CropAssignment]
    sex_complement: str
    cost: float

    @property
    def labels(self) -> list[str]:
        return [a.label for a in self.assignments]


@lru_cache(maxsize=16)
def _chromosome_groups(names: tuple[str, ...]) -> tuple[np.ndarray, tuple[tuple[int, np.ndarray], ...]]:
    """Per chromosome (NORMAL24 order): a label index, and the groups with several labels (variants)."""
    groups: dict[str, list[int]] = {c: [] for c in NORMAL24}
    for index, label in enumerate(names):
        groups[chromosome_of(label)].append(index)
    missing = [c for c, members in groups.items() if not members]
    if missing:
        raise ValueError(f"karyotype assembly needs all 24 chromosomes in the label scheme; it lacks {', '.join(missing)}")
    first = np.array([groups[c][0] for c in NORMAL24])
    several = tuple((g, np.array(groups[c])) for g, c in enumerate(NORMAL24) if len(groups[c]) > 1)
    return first, several


def check_scheme(labels: LabelScheme) -> None:
    """Raise ValueError unless the scheme can be assembled into a karyotype (all 24 chromosomes)."""
    try:
        _chromosome_groups(labels.labels)
    except ValueError as exc:
        raise ValueError(f"{labels.name}: {exc}") from None


class _CellProblem:
    """The per-cell pieces shared by every sex hypothesis: crop costs per chromosome and slot layout."""

    def __init__(self, probs: np.ndarray, labels: LabelScheme, priors: AssemblyPriors) -> None:
        first, several = _chromosome_groups(labels.labels)
        p = np.clip(probs, priors.prob_floor, 1.0)
        n = p.shape[0]
        self.best_label = np.tile(first, (n, 1))  # label index a crop takes within each chromosome
        for g, members in several:
            self.best_label[:, g] = members[p[:, members].argmax(axis=1)]
        self.group_cost = -np.log(np.take_along_axis(p, self.best_label, axis=1))  # n x 24 chromosomes
        self.slots = max(4, math.ceil(n / 24) + 2)  # enough columns for any cell: 24 * slots >= n
        self.column_group = np.repeat(np.arange(24), self.slots)
        self.crop_cost = self.group_cost[:, self.column_group]
        k = np.arange(1, self.slots + 1)
        trisomy = np.array([priors.trisomy(c) for c in AUTOSOMES])[:, None]
        self.autosome_slot_cost = np.where(k <= 2, -priors.loss_cost, trisomy + priors.extra_copy_cost * (k - 3))
        self.autosome_cumulative = np.concatenate(
            [np.zeros((22, 1)), np.cumsum(self.autosome_slot_cost, axis=1)], axis=1)
        self.constant = 22 * 2 * priors.loss_cost  # P(0) of every autosome: both copies missing

    def sex_slot_costs(self, complement: str, priors: AssemblyPriors) -> np.ndarray:
        """Slot costs of X and Y (2 x slots) when the true sex complement is `complement`."""
        k = np.arange(1, self.slots + 1)
        expected = np.array([[complement.count("X")], [complement.count("Y")]])
        return np.where(k <= expected, -priors.loss_cost, priors.sex_extra_cost + 2.0 * (k - expected - 1))

    def count_costs(self, counts: np.ndarray, complements: dict[str, np.ndarray], constants: dict[str, float]) -> np.ndarray:
        """The count prior of each row of `counts` (M x 24 copies), under its cheapest sex complement;
        inf where a chromosome has more copies than the cell has slots for."""
        autosomes = self.autosome_cumulative[np.arange(22), np.minimum(counts[:, :22], self.slots)].sum(axis=1)
        x, y = np.minimum(counts[:, 22], self.slots), np.minimum(counts[:, 23], self.slots)
        best = np.full(len(counts), np.inf)
        for c, sex in complements.items():
            cumulative = np.concatenate([np.zeros((2, 1)), np.cumsum(sex, axis=1)], axis=1)
            best = np.minimum(best, constants[c] + autosomes + cumulative[0, x] + cumulative[1, y])
        return np.where((counts > self.slots).any(axis=1), np.inf, best)

    def solve(self, sex_slot_cost: np.ndarray, warm: AssignmentState | None = None) -> tuple[float, AssignmentState]:
        """Optimal assignment cost (without constants) and its state for given X/Y slot costs."""
        slot_cost = np.concatenate([self.autosome_slot_cost, sex_slot_cost])
        cost = self.crop_cost + slot_cost.reshape(-1)[None, :]
        state = solve_assignment_state(cost, warm)
        return float(cost[np.arange(len(state.col4row)), state.col4row].sum()), state

    def pricer(self, columns: np.ndarray):  # noqa: ANN201 - a small closure
        """Cost of this assignment under any X/Y slot costs, each chromosome's slots refilled in order."""
        counts = np.bincount(self.column_group[columns], minlength=24)
        fixed = float(self.crop_cost[np.arange(len(columns)), columns].sum()
                      + self.autosome_cumulative[np.arange(22), counts[:22]].sum())
        return lambda sex: fixed + float(sex[0, : counts[22]].sum() + sex[1, : counts[23]].sum())


def assemble_cell(probs: np.ndarray, labels: LabelScheme, priors: AssemblyPriors | None = None) -> Assembly:
    """Jointly most likely labels for one cell's crops (`probs`: N crops x C classes of `labels`).

    Exact over the sex complements without solving each one: a relaxed problem whose X/Y slots
    cost the minimum over all complements bounds every complement from below, and its solution,
    re-priced under a complement, bounds that complement from above. Only complements whose
    lower bound beats the best priced total are solved (usually none: one solve per cell).
    """
    priors = priors or AssemblyPriors()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities must be N x {len(labels)} for scheme {labels.name}, got {probs.shape}")
    if not priors.sex_costs or any(set(c) - {"X", "Y"} for c in priors.sex_costs):
        raise ValueError(f"sex complements must be strings of X and Y, got {list(priors.sex_costs)}")
    if probs.shape[0] == 0:
        return Assembly([], "", 0.0)
    problem = _CellProblem(probs, labels, priors)
    complements = {c: problem.sex_slot_costs(c, priors) for c in priors.sex_costs}
    constants = {c: problem.constant + priors.sex_costs[c] + priors.loss_cost * len(c) for c in complements}
    relaxed_cost, relaxed_state = problem.solve(np.min(np.stack(list(complements.values())), axis=0))
    relaxed = relaxed_state.col4row
    price = problem.pricer(relaxed)
    best: tuple[float, str, np.ndarray] | None = None
    for c, sex_cost in complements.items():
        total = constants[c] + price(sex_cost)
        if best is None or total < best[0] - 1e-9:
            best = (total, c, relaxed)
    for c in sorted(complements, key=constants.__getitem__):
        if constants[c] + relaxed_cost < best[0] - 1e-9:
            # X/Y slots only get dearer than in the relaxed problem, by the same amount for every
            # crop: the relaxed optimum is a valid warm start (a few re-augmentations)
            cost, state = problem.solve(complements[c], warm=relaxed_state)
            if constants[c] + cost < best[0] - 1e-9:
                best = (constants[c] + cost, c, state.col4row)
    assert best is not None, "priors.sex_costs names no sex complement"
    total, complement, columns = best
    rows = np.arange(probs.shape[0])
    chosen = problem.best_label[rows, problem.column_group[columns]]
    top = probs.argmax(axis=1)
    ranked = np.sort(probs, axis=1)
    margin = ranked[:, -1] - (ranked[:, -2] if probs.shape[1] > 1 else 0.0)
    swap_cost, partner = cheapest_swaps(np.log(np.maximum(probs, priors.prob_floor)), chosen)
    close_swap = _within_odds(swap_cost, priors.review_swap_odds)
    recount_cost, recount_label = cheapest_recounts(problem, problem.column_group[columns], complements, constants)
    close_recount = _within_odds(recount_cost, priors.review_recount_odds)
    review = (chosen != top) | (margin < priors.review_margin) | close_swap | close_recount
    others = probs.copy()
    others[rows, chosen] = -np.inf
    other = others.argmax(axis=1)  # the most probable label other than the chosen one
    by_swap = close_swap & ~(close_recount & (recount_cost < swap_cost))
    alternative = np.where(by_swap, chosen[partner], np.where(close_recount, recount_label, other))
    assignments = [
        CropAssignment(
            index=int(i),
            label=labels.labels[chosen[i]],
            probability=float(probs[i, chosen[i]]),
            top_label=labels.labels[top[i]],
            top_probability=float(probs[i, top[i]]),
            review=bool(review[i]),
            swap_with=int(partner[i]) if by_swap[i] else None,
            alternative=labels.labels[alternative[i]] if review[i] else None,
        )
        for i in rows
    ]
    return Assembly(assignments, complement, total)


def _within_odds(cost: np.ndarray, odds: float) -> np.ndarray:
    """Alternatives costing less than ln(odds) nats over the call; none at odds 1 (the rule off),
    where a tie's rounding (-1e-15) would otherwise count."""
    return cost < math.log(odds) if odds > 1.0 else np.zeros(len(cost), dtype=bool)


def cheapest_recounts(
    problem: _CellProblem, groups: np.ndarray, complements: dict[str, np.ndarray], constants: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per crop: the cost in nats, over the call, of the cheapest other chromosome for it alone, and
    that chromosome's label for it.

    An exchange keeps the counts; moving one crop changes them, and with them the karyotype: the
    third 9 of a 47,XX,+9 read as an X makes 47,XXX. Assembly has already weighed that, so the
    move never costs less than 0; when it costs little, the call hangs on that crop, which is
    what a reviewer must look at. The count prior of a move depends only on the two chromosomes,
    so it is priced once per pair (24 x 24, each under every sex complement), not per crop.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    counts = np.bincount(groups, minlength=24)
    moved = np.tile(counts, (24 * 24, 1))
    source, target = np.divmod(np.arange(24 * 24), 24)
    moved[np.arange(24 * 24), source] -= 1
    moved[np.arange(24 * 24), target] += 1
    valid = counts[source] > 0
    prior = np.full(24 * 24, np.inf)
    prior[valid] = problem.count_costs(moved[valid], complements, constants)
    prior = (prior - problem.count_costs(counts[None, :], complements, constants)[0]).reshape(24, 24)
    evidence = problem.group_cost
    rows = np.arange(n)
    cost = evidence - evidence[rows, groups][:, None] + prior[groups]
    cost[rows, groups] = np.inf
    target_group = cost.argmin(axis=1)
    return cost[rows, target_group], problem.best_label[rows, target_group]


def cheapest_swaps(log_probs: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per crop: the cost in nats of exchanging its label with the cheapest other crop's, and that crop.

    Assembly gets the counts right, so what it still gets wrong is mostly a swap: a 4 and a 5 of
    one cell each read as the other. An exchange keeps every count, hence every prior cost, and
    costs only the two crops' own evidence. A crop's own margin misses it: two crops that are each
    70:30 for the wrong one of two labels both lead by 0.4, yet the exchange costs 2 ln(7/3) = 1.7
    nats, a 1-in-5.4 alternative. At the optimum no exchange costs less than 0.
    """
    n = len(chosen)
    own = log_probs[np.arange(n), chosen]
    cross = log_probs[:, chosen]  # cross[i, j]: crop i's log-probability of crop j's label
    cost = own[:, None] + own[None, :] - cross - cross.T
    cost[chosen[:, None] == chosen[None, :]] = np.inf  # the same label: nothing to exchange
    partner = cost.argmin(axis=1) if n else np.zeros(0, dtype=np.int64)
    return cost[np.arange(n), partner], partner
