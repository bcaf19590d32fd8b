"""Start training from an earlier model folder's weights (`karyo-export train --init-from`).

Why: a lab can pretrain once on synthetic chromosomes (`karyo-export synth`, no patient data, so
such weights may be shared) and fine-tune on its own crops, or continue from its last model when
new cases arrive. Weights only carry over between the same network, the same input box and the
same labels; anything else would silently scramble what each output means, so it is refused
before a single crop is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from karyo.runtime.bundle import sha256_file
from karyo.runtime.labels import LabelScheme

from .convert import ConvertError, read_model_folder


@dataclass(frozen=True)
class WarmStart:
    """Where the starting weights come from, recorded in the new folder's train_config.json."""

    folder: Path
    model_file: Path
    sha256: str
    trained_on: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "model_sha256": self.sha256, "trained_on": self.trained_on}


def check_warm_start(
    folder: str | Path, arch: str, width: float, head: str | None, labels: LabelScheme, input_size: tuple[int, int]
) -> WarmStart:
    """The folder's weights, if they fit this run; else ValueError naming the first difference."""
    folder = Path(folder).resolve()
    try:
        config, their_labels, their_spec = read_model_folder(folder)
    except ConvertError as exc:
        raise ValueError(f"--init-from: {exc}") from None
    except KeyError as exc:
        raise ValueError(f"--init-from {folder}: its train_config.json has no {exc}") from None
    theirs = {
        "arch": config.get("arch"),
        "width": config.get("width", 1.0),
        "head": config.get("head", "pool" if config.get("arch") == "edge" else None),  # folders from before --head
        "labels": list(their_labels.labels),
        "input": tuple(their_spec.input_shape[:2]),
    }
    ours = {"arch": arch, "width": width, "head": head, "labels": list(labels.labels), "input": tuple(input_size)}
    for key, value in ours.items():
        if theirs[key] != value:
            shown = {"input": lambda v: "x".join(map(str, v)), "labels": lambda v: f"{len(v)} labels ({', '.join(v[:3])}...)"}
            fmt = shown.get(key, str)
            raise ValueError(f"--init-from {folder}: trained with {key} {fmt(theirs[key])}, this run has {fmt(value)}")
    model_file = folder / "model.keras"
    return WarmStart(folder, model_file, sha256_file(model_file), [str(r) for r in config.get("data_roots", [])])


def load_warm_start(model: Any, start: WarmStart) -> None:
    """Copy the folder's weights into `model` (same layer shapes, checked once more on the real tensors)."""
    import keras

    source = keras.models.load_model(start.model_file, compile=False)
    theirs, ours = source.get_weights(), model.get_weights()
    shapes_differ = len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours))
    if shapes_differ:
        raise ValueError(f"--init-from {start.folder}: its layers differ from this run's network")
    model.set_weights(theirs)
