"""Karyotype strings (the ISCN forms the synthetic data uses) and the karyotypes of synthetic cases.

Supported: `46,XX`, `46,XY`, numerical changes (`47,XY,+21`, `45,XX,-13`, `45,X`, `47,XXY`,
`47,XYY`) and the eight structural variants of :data:`karyo.runtime.labels.STRUCTURAL`
(`46,XX,del(5)(p14)`, `46,X,i(X)(q10)`). An autosomal variant replaces one normal copy of its
chromosome; a sex-chromosome variant is an extra item when the sex complement written is short
(`46,X,i(X)(q10)`) and replaces a normal copy otherwise, which is how ISCN writes them.
"""

from __future__ import annotations

import re

from karyo.runtime.labels import AUTOSOMES, STRUCTURAL, parse_label

ANEUPLOID = ("47,XX,+13", "47,XY,+18", "47,XX,+21", "45,X", "47,XXY", "47,XYY",
             "47,XY,+13", "47,XX,+18", "47,XY,+21")
AUTOSOMAL_VARIANTS = tuple(v for v, parent in STRUCTURAL.items() if parent != "X")
X_VARIANTS = tuple(v for v, parent in STRUCTURAL.items() if parent == "X")

_SEX = re.compile(r"^[XY]+$")
_NUMERIC = re.compile(r"^([+-])(\d{1,2}|X|Y)$")


class KaryotypeError(ValueError):
    """A karyotype string this generator cannot draw; the message says what is wrong."""


def parse_karyotype(text: str) -> list[str]:
    """Labels of every chromosome in the cell, in karyogram order (1..22, X, Y, variants by parent)."""
    items = [part.strip() for part in text.replace(" ", "").split(",") if part.strip()]
    if len(items) < 2 or not items[0].isdigit():
        raise KaryotypeError(f"{text!r}: expected '<count>,<sex chromosomes>[,changes]', e.g. 46,XY or 47,XX,+21")
    count, sex = int(items[0]), items[1].upper()
    if not _SEX.match(sex):
        raise KaryotypeError(f"{text!r}: sex chromosomes {items[1]!r} should be letters X/Y, e.g. XX, XY, X, XXY")
    labels = [a for a in AUTOSOMES for _ in range(2)] + list(sex)
    variants: list[str] = []
    for item in items[2:]:
        numeric = _NUMERIC.match(item.upper())
        if numeric:
            chrom = numeric.group(2).lstrip("0") or "0"
            if chrom not in AUTOSOMES + ("X", "Y"):
                raise KaryotypeError(f"{text!r}: no chromosome {numeric.group(2)}")
            if numeric.group(1) == "+":
                labels.append(chrom)
            elif chrom in labels:
                labels.remove(chrom)
            else:
                raise KaryotypeError(f"{text!r}: cannot lose chromosome {chrom}, there is none")
            continue
        label = parse_label(item)
        if label not in STRUCTURAL:
            known = ", ".join(STRUCTURAL)
            raise KaryotypeError(f"{text!r}: cannot draw {item!r} (numerical changes like +21, or one of {known})")
        variants.append(label)
    missing = count - len(labels)
    for variant in variants:
        parent = STRUCTURAL[variant]
        if parent in ("X", "Y") and missing > 0:
            missing -= 1
        elif parent in labels:
            labels.remove(parent)
        else:
            raise KaryotypeError(f"{text!r}: {variant} needs a chromosome {parent} to replace")
        labels.append(variant)
    if len(labels) != count:
        raise KaryotypeError(f"{text!r}: the changes give {len(labels)} chromosomes, not {count}")
    return sorted(labels, key=_karyogram_position)


def _karyogram_position(label: str) -> tuple[int, int]:
    parent = STRUCTURAL.get(label, label)
    order = (AUTOSOMES + ("X", "Y")).index(parent)
    return order, int(label in STRUCTURAL)


def case_karyotype(scheme_name: str, case_index: int) -> str:
    """The constitutional karyotype of synthetic case number `case_index` (all its cells share it).

    Variants and aneuploidies cycle with the case index, so even a small dataset holds every
    class: seed32 puts an autosomal variant in every case and an X variant in every female one;
    binary schemes put the variant in every case, which gives one normal and one variant crop of
    that chromosome per cell (balanced classes). Sexes alternate.
    """
    male = case_index % 2 == 1
    if scheme_name == "normal24":
        if case_index % 3 == 2:  # a third of the cases aneuploid
            return ANEUPLOID[(case_index // 3) % len(ANEUPLOID)]
        return "46,XY" if male else "46,XX"
    if scheme_name == "seed32":
        autosomal = AUTOSOMAL_VARIANTS[case_index % len(AUTOSOMAL_VARIANTS)]
        if case_index % 3 == 2:  # a male case every third, so Y is well represented too
            return f"46,XY,{autosomal}"
        x_variant = X_VARIANTS[(case_index - case_index // 3) % len(X_VARIANTS)]
        return f"46,X,{autosomal},{x_variant}"
    if scheme_name.startswith("binary:"):
        variant = scheme_name.split(":", 1)[1]
        if variant not in STRUCTURAL:
            raise KaryotypeError(f"unknown variant in scheme {scheme_name!r}")
        if STRUCTURAL[variant] == "X":
            return f"46,X,{variant}"
        return f"46,{'XY' if male else 'XX'},{variant}"
    raise KaryotypeError(f"unknown scheme {scheme_name!r}: use normal24, seed32 or binary:<variant>")
