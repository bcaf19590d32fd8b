"""Label schemes and the one parser that turns a folder name into a label.

Labs name their class folders every which way (`1`, `01`, `chr_01`, `clase1`, `chr_x`, `23`);
everything in karyo goes through :func:`parse_label` so a tree from any lab reads the same.
Structural classes use their ISCN name as the label, so a karyotype call can print them as-is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AUTOSOMES: tuple[str, ...] = tuple(str(i) for i in range(1, 23))
SEX_CHROMOSOMES: tuple[str, ...] = ("X", "Y")
NORMAL24: tuple[str, ...] = AUTOSOMES + SEX_CHROMOSOMES

# The eight structural classes of the reference study, by ISCN name, with the chromosome each
# one is a variant of (the karyotype caller counts a variant as a copy of that chromosome).
STRUCTURAL: dict[str, str] = {
    "del(5)(p14)": "5",
    "inv(9)(p12q13)": "9",
    "del(18)(p11)": "18",
    "i(18)(q10)": "18",
    "i(X)(q10)": "X",
    "dup(X)(p22)": "X",
    "dup(X)(q21)": "X",
    "del(X)(q22)": "X",
}

# Names used by the study and by common datasets for the same variants.
_STRUCTURAL_ALIASES: dict[str, str] = {
    "chr_5_p14_deletion": "del(5)(p14)",
    "chr_9_inversion": "inv(9)(p12q13)",
    "chr_9_p12q13_inversion": "inv(9)(p12q13)",
    "chr_18_p11_deletion": "del(18)(p11)",
    "chr_18_q10_isochromosome": "i(18)(q10)",
    "chr_x_q10_isochromosome": "i(X)(q10)",
    "chr_x_p22_cnv": "dup(X)(p22)",
    "chr_x_q21_cnv": "dup(X)(q21)",
    "chr_x_q22_deletion": "del(X)(q22)",
}

_NUMBERED = re.compile(r"^(?:chr|chromosome|clase|class|c)?[ _\-.]?0*(\d{1,2})$")
_LETTER = re.compile(r"^(?:chr|chromosome|clase|class|c)?[ _\-.]?([xy])$")


def parse_label(name: str) -> str | None:
    """Return the canonical label a folder name stands for, or None if it names no class.

    Numbers 23 and 24 mean X and Y, as in the numbered schemes labs use.
    """
    raw = name.strip()
    low = raw.lower()
    for iscn in STRUCTURAL:
        if low == iscn.lower():
            return iscn
    if low in _STRUCTURAL_ALIASES:
        return _STRUCTURAL_ALIASES[low]
    match = _NUMBERED.match(low)
    if match:
        number = int(match.group(1))
        if 1 <= number <= 22:
            return str(number)
        if number == 23:
            return "X"
        if number == 24:
            return "Y"
        return None
    match = _LETTER.match(low)
    if match:
        return match.group(1).upper()
    return None


def chromosome_of(label: str) -> str:
    """The chromosome a label is a copy of: itself for normal classes, the parent for variants."""
    if label in STRUCTURAL:
        return STRUCTURAL[label]
    if label in NORMAL24:
        return label
    raise ValueError(f"unknown label {label!r}")


@dataclass(frozen=True)
class LabelScheme:
    """An ordered list of class labels; the order is the model's output order."""

    name: str
    labels: tuple[str, ...]

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"label {label!r} is not in scheme {self.name}") from None

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def structural(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label in STRUCTURAL)

    def to_dict(self) -> dict[str, object]:
        return {"scheme": self.name, "names": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "LabelScheme":
        names = data.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("labels.names must be a list of strings")
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("labels.names must hold at least two distinct labels")
        return cls(str(data.get("scheme", "custom")), tuple(names))


def scheme(name: str) -> LabelScheme:
    """Build a scheme by name: `normal24`, `seed32`, or `binary:<variant>` (the study's model C)."""
    if name == "normal24":
        return LabelScheme(name, NORMAL24)
    if name == "seed32":
        return LabelScheme(name, NORMAL24 + tuple(STRUCTURAL))
    if name.startswith("binary:"):
        variant = parse_label(name.split(":", 1)[1])
        if variant not in STRUCTURAL:
            known = ", ".join(STRUCTURAL)
            raise ValueError(f"binary scheme needs a structural variant ({known}), got {name!r}")
        return LabelScheme(f"binary:{variant}", (STRUCTURAL[variant], variant))
    raise ValueError(f"unknown label scheme {name!r}: use normal24, seed32 or binary:<variant>")


SCHEME_NAMES: tuple[str, ...] = ("normal24", "seed32") + tuple(f"binary:{v}" for v in STRUCTURAL)
