"""The model bundle: a folder of ONNX files plus `manifest.json`, verified on every load.

A bundle travels from the training machine to the scanner PC by USB stick or network share; the
manifest's hashes catch a truncated copy or a hand-edited file before a single crop is classified.
Writers build the new bundle in a temporary sibling folder and rename it into place, so a crash
or a failed quantization never leaves a half-written bundle where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from .cell_size import SizePrior
from .labels import LabelScheme
from .orientation import DEFAULT_ORIENTATION, ORIENTATIONS
from .preprocess import PreprocessSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class BundleError(Exception):
    """A bundle that must not be used; the message names the file at fault."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def case_digest(case: str) -> str:
    """A case (patient) id as a manifest stores it. Hashed, so a bundle shared with another lab does
    not list accession numbers in clear, while `karyo evaluate` and `karyo audit` can still tell
    which cases of a folder the model trained on. Not anonymisation: a short numeric id is found
    again by hashing every candidate, so the manifest stays as internal as the ids themselves."""
    return hashlib.sha256(case.encode("utf-8")).hexdigest()[:16]


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Manifest:
    labels: LabelScheme
    preprocess: PreprocessSpec
    precisions: dict[str, dict[str, Any]]  # name -> {"file", "metrics", ...}
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    input_name: str = "image"
    output_name: str = "probabilities"
    schema_version: int = SCHEMA_VERSION
    cell_size: SizePrior | None = None  # optional: bundles from before it existed have none
    # which way up the network reads crops by default: "any" when it was trained flipped upside
    # down too (`--vflip`); bundles from before the key existed were all p-arm-up networks
    orientation: str = DEFAULT_ORIENTATION

    def to_dict(self) -> dict[str, Any]:
        height, width, channels = self.preprocess.input_shape
        return {
            "schema_version": self.schema_version,
            "labels": self.labels.to_dict(),
            "input": {"name": self.input_name, "shape": [None, height, width, channels], "layout": "NHWC", "dtype": "float32"},
            "output": {"name": self.output_name, "kind": "probabilities", "shape": [None, len(self.labels)]},
            "preprocess": self.preprocess.to_dict(),
            "provenance": self.provenance,
            "precisions": self.precisions,
            "files": self.files,
            "orientation": self.orientation,
            **({"cell_size": self.cell_size.to_dict()} if self.cell_size is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{MANIFEST}: schema_version {version!r}, this karyo reads {SCHEMA_VERSION}")
        try:
            labels = LabelScheme.from_dict(data["labels"])
            preprocess = PreprocessSpec.from_dict(data["preprocess"])
            precisions = dict(data["precisions"])
            inputs, outputs = data["input"], data["output"]
            files = dict(data.get("files", {}))
            cell_size = SizePrior.from_dict(data["cell_size"]) if data.get("cell_size") is not None else None
            orientation = str(data.get("orientation", DEFAULT_ORIENTATION))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{MANIFEST}: malformed ({exc})") from None
        for name, entry in precisions.items():
            if name not in PRECISIONS or not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise BundleError(f"{MANIFEST}: bad precision entry {name!r}")
        for relative in [entry["file"] for entry in precisions.values()] + list(files):
            if not _is_inside(relative):  # a bundle off a USB stick must not point at files elsewhere
                raise BundleError(f"{MANIFEST}: file path {relative!r} leaves the bundle folder")
        if cell_size is not None and cell_size.labels != labels.labels:
            raise BundleError(f"{MANIFEST}: cell_size labels differ from the model's labels")
        if orientation not in ORIENTATIONS:
            raise BundleError(f"{MANIFEST}: orientation {orientation!r}, this karyo reads {', '.join(ORIENTATIONS)}")
        if not isinstance(inputs, dict) or not isinstance(outputs, dict):
            raise BundleError(f"{MANIFEST}: malformed input/output description")
        if inputs.get("layout") != "NHWC" or inputs.get("dtype") != "float32":
            raise BundleError(f"{MANIFEST}: unsupported input {inputs}")
        return cls(
            labels=labels,
            preprocess=preprocess,
            precisions=precisions,
            provenance=dict(data.get("provenance", {})),
            files=files,
            input_name=str(inputs.get("name", "image")),
            output_name=str(outputs.get("name", "probabilities")),
            cell_size=cell_size,
            orientation=orientation,
        )


def _is_inside(relative: str) -> bool:
    path = PurePosixPath(str(relative).replace("\\", "/"))
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and ":" not in str(relative)


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def labels(self) -> LabelScheme:
        return self.manifest.labels

    @property
    def spec(self) -> PreprocessSpec:
        return self.manifest.preprocess

    @property
    def size_prior(self) -> SizePrior | None:
        """Per-class chromosome size relative to the cell, used where crops come as cells."""
        return self.manifest.cell_size

    @property
    def orientation(self) -> str:
        """Which way up this bundle's network reads crops unless told otherwise (p-arm-up or any)."""
        return self.manifest.orientation

    @property
    def available_precisions(self) -> list[str]:
        return [p for p in PRECISIONS if p in self.manifest.precisions]

    @property
    def training_case_digests(self) -> frozenset[str] | None:
        """:func:`case_digest` of every case the network was trained or early-stopped on; None for
        bundles from before the manifest recorded them (then no one can say which cases are new)."""
        training = self.manifest.provenance.get("training")
        digests = training.get("case_digests") if isinstance(training, dict) else None
        return frozenset(str(d) for d in digests) if isinstance(digests, list) else None

    def seen_in_training(self, cases: Iterable[str]) -> set[str] | None:
        """Which of `cases` the network saw in training (None: the bundle does not say). Figures on
        those cases are optimistic, and an audit finds few label errors there: the model learned them."""
        digests = self.training_case_digests
        if digests is None:
            return None
        return {case for case in set(cases) if case_digest(case) in digests}

    def model_path(self, precision: str) -> Path:
        if precision not in self.manifest.precisions:
            have = ", ".join(self.available_precisions) or "none"
            raise BundleError(f"{self.path}: no {precision} model in this bundle (it has {have})")
        return self.path / self.manifest.precisions[precision]["file"]

    def metrics(self, precision: str) -> dict[str, Any]:
        return dict(self.manifest.precisions.get(precision, {}).get("metrics", {}))


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and (by default) verify a bundle: schema, every listed file present with its sha256."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; not a karyo bundle")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path}: not a JSON object")
    manifest = Manifest.from_dict(data)
    bundle = Bundle(root, manifest)
    if verify:
        verify_bundle(bundle)
    return bundle


def verify_bundle(bundle: Bundle) -> None:
    files = bundle.manifest.files
    for precision, entry in bundle.manifest.precisions.items():
        if entry["file"] not in files:
            raise BundleError(f"{bundle.path / entry['file']}: {precision} model has no sha256 in the manifest")
    for relative, expected in files.items():
        target = bundle.path / relative
        if not target.is_file():
            raise BundleError(f"{target}: listed in the manifest but missing")
        actual = sha256_file(target)
        if actual != expected:
            raise BundleError(f"{target}: sha256 mismatch (file changed or corrupted since export)")


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Hash every file in folder (except the manifest) into manifest.files and write it atomically."""
    manifest.files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    atomic_write_text(folder / MANIFEST, text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give: temp files are 0600, but a bundle on a shared
    drive must be readable by the other users of the scanner PC."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a file so that readers see the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, _default_mode(directory=False))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_folder(target: str | Path, start_from_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces target, on error it is removed.

    With `start_from_existing`, the stage starts as a copy of target (for in-place updates such
    as re-quantizing), so the old bundle stays intact until the new one is complete.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
    try:
        if start_from_existing and target.is_dir():
            shutil.rmtree(stage)
            shutil.copytree(target, stage)
        os.chmod(stage, _default_mode(directory=True))
        yield stage
        backup = None
        if target.exists():
            backup = target.parent / f".{target.name}.old.{os.getpid()}"
            os.replace(target, backup)
        try:
            os.replace(stage, target)
        except BaseException:
            if backup is not None:  # put the old bundle back rather than leave nothing
                os.replace(backup, target)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
