"""Release detection and the reader entry points shared by the MOSI and MOSEI modules.

Detection under a folder root, in preference order (the first present wins under ``release: auto``):
MMSA ``<mmsa dir>/{aligned_50,unaligned_50}.pkl``, MulT ``<name>_data[_noalign].pkl``, MultiBench
``<name>_raw.pkl`` (word-aligned only), SDK ``*.csd``. A pickle given directly (any file name) is recognised
from its content (:func:`.pickles.family`); the family found is always named in :func:`describe`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.corpora.affect import pickles, sdk, sdk_files
from mmdata.corpora.affect.spec import (
    FAMILY_NAMES,
    MMSA_FILES,
    SPLITS,
    AffectSpec,
    Located,
    Options,
)
from mmdata.corpora.base import Skip, require_root
from mmdata.errors import ConfigError
from mmdata.types import Features, Sample


def _candidates(spec: AffectSpec, root: Path, release: str, variant: str) -> list[tuple[str, Path]]:
    """(family, path) to look for under a folder root, in preference order."""
    out: list[tuple[str, Path]] = []
    if release in ("auto", "mmsa"):
        out += [("mmsa", root / d / MMSA_FILES[variant]) for d in spec.mmsa_dirs]
    if release in ("auto", "mult"):
        out.append(("mult", root / spec.mult_files[variant]))
    if release in ("auto", "multibench") and variant == "aligned":
        out.append(("multibench", root / spec.multibench_file))
    if release in ("auto", "sdk"):
        out += [("sdk", folder) for folder in (root, *(root / d for d in spec.sdk_dirs))]
    return out


def _present(family: str, path: Path) -> bool:
    return any(path.glob("*.csd")) if family == "sdk" else path.is_file()


def _find(spec: AffectSpec, root: Path, options: Options) -> tuple[str, Path]:
    """(family guess, path) of the release under ``root``; ConfigError naming what was tried."""
    if root.is_file():
        return ("sdk", root.parent) if root.suffix == ".csd" else ("pickle", root)
    if options.release == "multibench" and options.variant == "unaligned":
        raise ConfigError(f"{spec.name}: MultiBench raw pickles are word-aligned only; set variant: aligned")
    tried = _candidates(spec, root, options.release, options.variant)
    for family, path in tried:
        if _present(family, path):
            return ("sdk" if family == "sdk" else "pickle"), path
    names = ", ".join(str(p / "*.csd") if f == "sdk" else str(p) for f, p in tried)
    raise ConfigError(f"{spec.name}: no {options.variant} {options.release} release under {root}; looked for {names}")


def locate(spec: AffectSpec, root: str | Path, options: Options) -> tuple[Located, Any]:
    """The release under ``root`` and its payload (the unpickled dict, or the SDK sequences and folds).

    Raises:
        ConfigError: bad option, missing root, no release, or a release that contradicts the options.
    """
    options.check(spec.name)
    kind, path = _find(spec, require_root(root, spec.name), options)
    if kind == "sdk":
        if options.release not in ("auto", "sdk"):
            raise ConfigError(f"{spec.name}: {path} holds the sdk release, not {options.release}; set release: sdk")
        loc = Located("sdk", options.variant, path, ".csd computational sequences")
        return loc, (sdk.sequences(loc, spec, options), _folds(spec, path, options))
    data = pickles.load(path, spec)
    family, evidence = pickles.family(data, path, spec)
    if options.release not in ("auto", family):
        raise ConfigError(f"{spec.name}: {path} holds the {family} release, not {options.release}; "
                          f"set release: {family}")
    held = pickles.variant(data, family)
    if held != options.variant:
        raise ConfigError(f"{spec.name}: {path} holds {held} sequences; set variant: {held}")
    return Located(family, held, path, evidence), data


def _folds(spec: AffectSpec, folder: Path, options: Options) -> tuple[Path, dict[str, list[str]]]:
    """The folds file and its video lists; ConfigError telling where to get one when none is found."""
    path = sdk_files.find_folds(folder, options.folds)
    if path is None:
        raise ConfigError(
            f"{spec.name}: no folds file next to the .csd files in {folder}; set folds to the SDK's "
            f"mmsdk/mmdatasdk/dataset/standard_datasets/{spec.title.replace('-', '_')}/"
            f"{spec.title.lower().replace('-', '_')}_std_folds.py or to a JSON with train/valid/test video ids")
    return path, sdk_files.read_folds(path, spec.title)


def features(spec: AffectSpec, root: str | Path, options: Options) -> Features:
    """The schema of the release found (dims, lengths and optional fields depend on it)."""
    loc, payload = locate(spec, root, options)
    if loc.family == "sdk":
        return sdk.features(spec, loc, payload[0])
    return pickles.features(spec, loc, payload)


def sources(spec: AffectSpec, root: str | Path, options: Options) -> list[Path]:
    """The files read: one pickle, or the .csd files used plus the folds file when it is under the root."""
    loc, payload = locate(spec, root, options)
    if loc.family != "sdk":
        return [loc.path]
    seqs, (folds_path, _) = payload
    files = sorted({seq.path for seq in seqs.values()})
    base = Path(root) if Path(root).is_dir() else loc.path
    if folds_path.resolve().is_relative_to(base.resolve()):
        files.append(folds_path)
    return files


def describe(spec: AffectSpec, root: str | Path, options: Options) -> str:
    """Which release family, variant and files were found, in words."""
    loc, payload = locate(spec, root, options)
    name = FAMILY_NAMES[loc.family]
    if loc.family != "sdk":
        return f"{spec.title}, {name} release ({loc.evidence}), {loc.variant} sequences, file {loc.path}"
    seqs, (folds_path, folds) = payload
    roles = ", ".join(f"{k} {v.root!r} ({v.path.name})" for k, v in seqs.items())
    counts = " / ".join(f"{len(folds[s])} {s}" for s in SPLITS)
    return (f"{spec.title}, {name} release in {loc.path} ({roles}), {loc.variant} to the opinion segments; "
            f"folds {folds_path} ({counts} videos; {sdk.unfolded(seqs, folds)} labelled videos in no fold, "
            f"not read)")


def iter_samples(spec: AffectSpec, root: str | Path, split: str, options: Options, start: int = 0,
                 stop: int | None = None) -> Iterator[Sample | Skip]:
    """One Sample or Skip per raw row (pickle row or SDK label segment) of ``split``, deterministic order: raw
    items ``start .. stop - 1`` (None: to the end). An SDK part reads only its own videos' entries; a pickle
    has no random access, so a part loads the whole file (cached per process, :func:`.pickles.load`)."""
    if split not in SPLITS:
        raise ConfigError(f"{spec.name}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    loc, payload = locate(spec, root, options)
    if loc.family == "sdk":
        seqs, (_, folds) = payload
        yield from sdk.iter_rows(spec, loc, seqs, split, sdk.features(spec, loc, seqs), folds, start, stop)
    else:
        yield from pickles.iter_rows(spec, loc, payload, split, pickles.features(spec, loc, payload), start, stop)
