"""Cell context: chromosome size measured on the crop, relative to its cell, weighed into the call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from karyo.runtime.bundle import BundleError, Manifest
from karyo.runtime.cell_size import (
    FRAGMENT_RELATIVE_AREA,
    JOINED_PAIR_MIN_LOG_ODDS,
    SizePrior,
    fragment_mask,
    relative_sizes,
    sizes_array,
)
from karyo.runtime.dataset import Sample
from karyo.runtime.cell_evaluation import evaluate_cells
from karyo.runtime.karyotype import karyotype_cell
from karyo.runtime.labels import LabelScheme, scheme
from karyo.runtime.preprocess import PreprocessSpec, measure_chromosome, prepare_gray
from karyo.runtime.tensors import LabeledTensors

THREE = LabelScheme("custom", ("big", "mid", "small"))


def rod(height: int = 120, width: int = 40, top: int = 20, length: int = 60, thick: int = 10) -> np.ndarray:
    image = np.full((height, width), 240.0, np.float32)
    left = (width - thick) // 2
    image[top : top + length, left : left + thick] = 60.0
    return image


def test_measure_chromosome_reads_length_and_area_and_ignores_a_neighbour_at_the_edge():
    length, area = measure_chromosome(rod(length=60, thick=10))
    assert 58 <= length <= 62 and 560 <= area <= 640
    crowded = rod(length=60, thick=10)
    crowded[90:120, 0:6] = 60.0  # a neighbour's tip entering through the left and bottom edges
    assert measure_chromosome(crowded) == pytest.approx((length, area), abs=2)
    lying = rod(height=40, width=120, top=15, length=10, thick=70).T.copy()  # a rod across the crop
    assert measure_chromosome(lying)[0] == pytest.approx(70, abs=2)
    assert measure_chromosome(np.full((50, 30), 240.0, np.float32)) is None  # blank: nothing to measure


def test_prepare_gray_measures_the_chromosome_not_the_neighbour_it_blanks():
    spec = PreprocessSpec(size=48, width=16)
    crowded = rod(length=60, thick=10)
    crowded[90:120, 0:6] = 60.0  # a neighbour entering through the edge: blanked, and not measured
    tensor, (length, area) = prepare_gray(crowded, spec)
    assert tensor.shape == (48, 16, 1)
    assert 58 <= length <= 62 and 560 <= area <= 640  # the 60 x 10 px rod alone
    background = (255 - 240) / 255  # inverted paper level
    assert np.allclose(tensor[-8:, :4], background, atol=1e-3)  # the neighbour's corner is paper in the model input


def test_relative_sizes_divide_by_the_cell_median_and_skip_small_cells_and_blanks():
    sizes = np.array([[100, 1000]] * 5 + [[50, 250]] * 6 + [[np.nan, np.nan]] + [[80, 800]] * 3, float)
    cells = ["a"] * 12 + ["b"] * 3
    rel = relative_sizes(sizes, cells, min_cell_crops=10)
    # cell a: 11 measured crops, median length 50 and area 250
    assert rel[0] == pytest.approx([np.log(2.0), np.log(4.0)])
    assert rel[5] == pytest.approx([0.0, 0.0])
    assert np.isnan(rel[11]).all()  # unmeasured crop
    assert np.isnan(rel[12:]).all()  # cell b has 3 crops: too few for a median
    with pytest.raises(ValueError, match="cell names"):
        relative_sizes(sizes, cells[:-1])


def _fitted_prior(rng: np.random.Generator, weight: float = 0.5) -> SizePrior:
    centres = {"big": (0.6, 1.2), "mid": (0.0, 0.0), "small": (-0.6, -1.2)}
    labels, rows = [], []
    for label, centre in centres.items():
        rows.append(rng.normal(centre, 0.08, (200, 2)))
        labels += [label] * 200
    return SizePrior.fit(labels, np.concatenate(rows), THREE, weight=weight)


def test_size_prior_fits_per_class_and_resolves_a_crop_the_image_cannot():
    prior = _fitted_prior(np.random.default_rng(0))
    assert prior.mean[0] == pytest.approx([0.6, 1.2], abs=0.03) and prior.counts == (200, 200, 200)
    probs = np.array([[0.5, 0.5, 0.0], [0.45, 0.1, 0.45], [0.2, 0.7, 0.1]])
    rel = np.array([[0.0, 0.0], [-0.6, -1.2], [np.nan, np.nan]])
    out = prior.apply(probs, rel)
    assert out.argmax(1).tolist() == [1, 2, 1]  # mid-sized -> mid; small -> small; unmeasured: unchanged
    assert out[2] == pytest.approx(probs[2])
    assert np.allclose(out.sum(1), 1.0, atol=1e-6)
    # a confident image is not overruled by an implausible size: the size term is bounded
    confident = prior.apply(np.array([[0.9999, 0.0001, 0.0]]), np.array([[-3.0, -6.0]]))
    assert confident.argmax() == 0
    assert _fitted_prior(np.random.default_rng(0), weight=0.0).apply(probs, rel)[:2] == pytest.approx(probs[:2], abs=1e-6)


def test_size_prior_round_trips_through_json_and_rejects_unknown_features():
    prior = _fitted_prior(np.random.default_rng(1))
    again = SizePrior.from_dict(json.loads(json.dumps(prior.to_dict())))
    rel = np.array([[0.3, 0.5], [-0.2, -0.1]])
    assert again.labels == prior.labels and again.weight == prior.weight
    assert np.allclose(again.log_likelihood(rel), prior.log_likelihood(rel), atol=1e-4)
    with pytest.raises(ValueError, match="features"):
        SizePrior.from_dict({**prior.to_dict(), "features": ["length_px"]})
    assert SizePrior.fit(["big"], np.full((1, 2), np.nan), THREE) is None  # no cell was measurable


def test_a_class_seen_too_rarely_gets_a_neutral_size_term():
    rng = np.random.default_rng(2)
    labels = ["big"] * 100 + ["mid"] * 100 + ["small"] * 2
    rel = np.concatenate([rng.normal(0.6, 0.1, (100, 2)), rng.normal(0.0, 0.1, (100, 2)), [[-0.6, -1.2]] * 2])
    prior = SizePrior.fit(labels, rel, THREE)
    ll = prior.log_likelihood(np.array([[-0.6, -1.2], [0.6, 0.6]]))
    assert prior.counts[2] == 2
    for row in ll:  # the unfitted class sits between the two fitted ones: neither favoured nor ruled out
        assert min(row[:2]) <= row[2] <= max(row[:2])


def test_bundle_manifest_carries_the_prior_and_checks_its_labels():
    labels = scheme("normal24")
    rng = np.random.default_rng(3)
    names = [labels.labels[i % 24] for i in range(480)]
    rel = rng.normal(0, 0.3, (480, 2))
    prior = SizePrior.fit(names, rel, labels)
    manifest = Manifest(labels, PreprocessSpec(), {"fp32": {"file": "model.fp32.onnx"}}, cell_size=prior)
    data = json.loads(json.dumps(manifest.to_dict()))
    assert Manifest.from_dict(data).cell_size.labels == labels.labels
    assert "cell_size" not in Manifest(labels, PreprocessSpec(), {"fp32": {"file": "m.onnx"}}).to_dict()
    data["cell_size"]["labels"] = list(reversed(data["cell_size"]["labels"]))
    with pytest.raises(BundleError, match="cell_size labels"):
        Manifest.from_dict(data)
    data["cell_size"]["mean"] = [[0.0]]
    with pytest.raises(BundleError, match="malformed"):
        Manifest.from_dict(data)


def _cell_of(labels: LabelScheme, lengths: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """One normal 46,XY cell: two crops per autosome, X, Y; sizes from a per-chromosome length table."""
    names = [c for c in labels.labels[:22] for _ in range(2)] + ["X", "Y"]
    sizes = np.array([[lengths[n], lengths[n] ** 2 / 4] for n in names])
    return names, sizes


def test_evaluate_cells_reports_size_context_and_assembles_from_it():
    labels = scheme("normal24")
    lengths = {name: 120.0 * 0.96**i for i, name in enumerate(labels.labels)}
    rng = np.random.default_rng(4)
    samples, all_sizes, train_names = [], [], []
    for cell in range(30):  # training cells give the prior; the same layout is then "held out"
        names, sizes = _cell_of(labels, lengths)
        sizes = sizes * rng.uniform(0.7, 1.3) * rng.normal(1, 0.02, sizes.shape)  # each cell its own scale
        samples += [Sample(Path(f"/c{cell}/{i}.png"), n, "case", str(cell)) for i, n in enumerate(names)]
        all_sizes.append(sizes)
        train_names += names
    all_sizes = np.concatenate(all_sizes)
    data = LabeledTensors(np.zeros((len(samples), 1, 1, 1)), np.zeros(len(samples), int), samples, [], all_sizes)
    from karyo.export.train import fit_size_prior

    prior = fit_size_prior(data, labels)
    assert prior is not None and prior.mean[0, 0] > prior.mean[21, 0]  # chromosome 1 longer than 22
    # image probabilities that confuse 1 with 22 half the time; size tells them apart
    truth = np.array([labels.index(s.label) for s in samples])
    probs = np.full((len(samples), 24), 0.01)
    probs[np.arange(len(samples)), truth] = 0.5
    swap = {labels.index("1"): labels.index("22"), labels.index("22"): labels.index("1")}
    for row, t in enumerate(truth):
        if t in swap and row % 2:
            probs[row, swap[t]] = 0.7
    probs /= probs.sum(1, keepdims=True)
    plain = evaluate_cells(samples, probs, labels)
    sized = evaluate_cells(samples, probs, labels, sizes=all_sizes, size_prior=prior)
    assert "crop_accuracy_size" not in plain
    assert plain["crop_accuracy_top1"] == sized["crop_accuracy_top1"] < 0.96
    assert sized["crop_accuracy_size"] == 1.0 and sized["complete_exact_rate"] == 1.0
    # the same cell through karyotype_cell, with and without its sizes
    rows = slice(0, 46)
    assert karyotype_cell(probs[rows], labels, sizes=all_sizes[rows], size_prior=prior).karyotype == "46,XY"
    unsized = karyotype_cell(probs[rows], labels, sizes=None, size_prior=prior)
    assert sum(a.label != s.label for a, s in zip(unsized.assignments, samples[:46])) > 0


def test_sizes_array_marks_unmeasured_crops():
    out = sizes_array([(10.0, 40.0), None])
    assert out[0].tolist() == [10.0, 40.0] and np.isnan(out[1]).all()


def _female_cell_with_a_speck(labels: LabelScheme) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A 46,XX cell's labels and sizes (length, area) plus one 6 x 9 px speck the image model reads as Y."""
    names = [c for c in labels.labels if c not in ("X", "Y") for _ in range(2)] + ["X", "X"]
    lengths = np.array([120.0 * 0.96 ** labels.index(n) for n in names])
    sizes = np.stack([lengths, lengths * 12.0], axis=1)
    sizes = np.concatenate([sizes, [[9.0, 40.0]]])
    probs = np.full((len(names) + 1, len(labels)), 0.1 / (len(labels) - 1))
    probs[np.arange(len(names)), [labels.index(n) for n in names]] = 0.9
    probs[-1] = 0.02 / (len(labels) - 1)
    probs[-1, labels.index("Y")] = 0.98
    return names + ["13"], sizes, probs


def test_fragment_mask_flags_only_objects_far_below_the_smallest_chromosome():
    labels = scheme("normal24")
    names, sizes, _ = _female_cell_with_a_speck(labels)
    relative = relative_sizes(sizes, ["cell"] * len(sizes))
    flagged = fragment_mask(relative)
    assert flagged.tolist() == [False] * 46 + [True]
    # the smallest real chromosome of the cell sits well above the cut: a 21 is ~0.4 of the median area
    assert np.exp(relative[:46, 1].min()) > 3 * FRAGMENT_RELATIVE_AREA
    # unknown sizes and cells too small for a median are never fragments
    assert not fragment_mask(relative_sizes(sizes[-5:], ["cell"] * 5)).any()
    assert not fragment_mask(np.full((3, 2), np.nan)).any()


def test_a_speck_takes_no_chromosome_slot_and_is_named_for_review():
    labels = scheme("normal24")
    names, sizes, probs = _female_cell_with_a_speck(labels)
    paths = [f"/cell/{i}.png" for i in range(len(names))]
    # without sizes the speck has to fill a slot: a confident Y makes a female cell XXY
    assert karyotype_cell(probs, labels).karyotype == "47,XXY"
    call = karyotype_cell(probs, labels, paths=paths, sizes=sizes)
    assert call.karyotype == "46,XX" and call.count == 46 and call.complete
    speck = call.assignments[-1]
    assert speck.fragment and speck.review and speck.path == "/cell/46.png" and speck.top_label == "Y"
    assert not any(a.fragment for a in call.assignments[:-1])
    assert [a.label for a in call.assignments[:-1]] == names[:-1]
    assert [a.index for a in call.assignments] == list(range(47))
    assert call.findings == ["1 object too small for a whole chromosome, not counted (debris, a fragment or a small marker): review"]
    assert call.to_dict()["assignments"][-1]["fragment"] is True
    # evaluation: the speck (labelled "13" in truth, like the real one in pki-dev) is listed and counts as wrong
    samples = [Sample(Path(p), n, "case", "1") for p, n in zip(paths, names)]
    result = evaluate_cells(samples, probs, labels, sizes=sizes)
    assert result["fragments"] == [{"cell": "case/1", "path": "/cell/46.png", "truth": "13"}]
    assert result["crop_accuracy_assembled"] == pytest.approx(46 / 47)
    assert result["errors"][0]["truth"] == "47,XX,+13" and result["errors"][0]["called"] == "46,XX"


def _joined_pair_prior(labels: LabelScheme) -> tuple[SizePrior, dict[str, float]]:
    """A prior fitted on 40 normal 46,XY cells whose chromosome c is 120 * 0.96**index px long and
    12 px wide, each crop's size off by 5% and each cell at its own scale; and the length table."""
    lengths = {name: 120.0 * 0.96**i for i, name in enumerate(labels.labels)}
    rng = np.random.default_rng(11)
    names, relative = [], []
    for cell in range(40):
        cell_names, _ = _cell_of(labels, lengths)
        length = np.array([lengths[n] for n in cell_names]) * rng.uniform(0.7, 1.3)
        sizes = np.stack([length, length * 12.0], axis=1) * rng.lognormal(0, 0.05, (len(length), 2))
        relative.append(relative_sizes(sizes, ["cell"] * len(sizes)))
        names += cell_names
    prior = SizePrior.fit(names, np.concatenate(relative), labels)
    assert prior is not None
    return prior, lengths


def test_joined_pair_odds_favour_two_chromosomes_only_where_the_area_holds_both():
    labels = scheme("normal24")
    prior, lengths = _joined_pair_prior(labels)
    names, _ = _cell_of(labels, lengths)
    sizes = np.array([[lengths[n], lengths[n] * 12.0] for n in names])
    seven = names.index("7")
    sizes[seven, 1] += lengths["15"] * 12.0  # the 7 with a 15 lying beside it: one object, both areas
    relative = relative_sizes(sizes, ["cell"] * len(sizes))
    own = np.array([labels.index(n) for n in names])
    odds = prior.joined_pair_log_odds(relative, own, labels.index("15"))
    assert odds[seven] > JOINED_PAIR_MIN_LOG_ODDS  # e**20 or more here: the pair explains the area
    assert np.delete(odds, seven).max() < 0  # every crop of its own size: the single chromosome is likelier
    relative[0] = np.nan
    assert prior.joined_pair_log_odds(relative, own, labels.index("15"))[0] == -np.inf


def _one_short_cell(labels: LabelScheme, lengths: dict[str, float], joined: bool) -> tuple[list[str], np.ndarray]:
    """A 46,XX cell cut without one 15: with `joined`, that 15 lies beside a 7 and is in the 7's crop."""
    names = [c for c in labels.labels[:22] for _ in range(2)] + ["X", "X"]
    names.remove("15")
    sizes = np.array([[lengths[n], lengths[n] * 12.0] for n in names])
    if joined:
        sizes[names.index("7"), 1] += lengths["15"] * 12.0
    return names, sizes


def test_a_cell_one_short_names_the_crop_that_may_hold_the_missing_chromosome():
    labels = scheme("normal24")
    prior, lengths = _joined_pair_prior(labels)
    names, sizes = _one_short_cell(labels, lengths, joined=True)
    probs = np.full((len(names), 24), 0.1 / 23)
    probs[np.arange(len(names)), [labels.index(n) for n in names]] = 0.9
    call = karyotype_cell(probs, labels, sizes=sizes, size_prior=prior)
    assert call.karyotype == "45,XX,-15"  # the count stands: only a person can tell a pile-up from a loss
    flagged = [a for a in call.assignments if a.joined]
    assert [(a.index, a.label, a.alternative, a.review) for a in flagged] == [(names.index("7"), "7", "15", True)]
    assert call.findings[0] == "monosomy 15"
    assert call.findings[1].startswith("the crop placed as 7 measures like a 7 and a 15 together (")
    assert call.to_dict()["assignments"][names.index("7")]["joined"] is True
    from karyo.runtime.cli_karyotype import other_checks

    assert other_checks(call) == ["7 (+15?)"]
    # the 15 simply missing: no crop is large enough to hold it, nothing is named
    names, sizes = _one_short_cell(labels, lengths, joined=False)
    plain = karyotype_cell(probs, labels, sizes=sizes, size_prior=prior)
    assert plain.karyotype == "45,XX,-15" and plain.findings == ["monosomy 15"]
    assert not any(a.joined or a.review for a in plain.assignments)
    # a cell with every chromosome is not checked, however large a crop
    names, sizes = _one_short_cell(labels, lengths, joined=True)
    fifteen = [[lengths["15"], lengths["15"] * 12.0]]
    full = karyotype_cell(confident_rows(labels, names + ["15"]), labels, sizes=np.vstack([sizes, fifteen]),
                          size_prior=prior)
    assert full.karyotype.startswith("46,XX") and not any(a.joined for a in full.assignments)


def test_a_cell_one_sex_chromosome_short_checks_for_the_x_and_the_y():
    labels = scheme("normal24")
    prior, lengths = _joined_pair_prior(labels)
    names = [c for c in labels.labels[:22] for _ in range(2)] + ["X"]  # 45,X as counted
    sizes = np.array([[lengths[n], lengths[n] * 12.0] for n in names])
    sizes[names.index("3"), 1] += lengths["X"] * 12.0  # the second X lies on a 3
    call = karyotype_cell(confident_rows(labels, names), labels, sizes=sizes, size_prior=prior)
    assert call.karyotype == "45,X"
    (flagged,) = [a for a in call.assignments if a.joined]
    assert (flagged.label, flagged.alternative) == ("3", "X")
    assert "measures like a 3 and an X together" in call.findings[-1]


def confident_rows(labels: LabelScheme, names: list[str], p: float = 0.9) -> np.ndarray:
    probs = np.full((len(names), len(labels)), (1.0 - p) / (len(labels) - 1))
    probs[np.arange(len(names)), [labels.index(n) for n in names]] = p
    return probs
