"""Synthetic CMU-MOSI / CMU-MOSEI minis in every release layout, holding the same clips.

:mod:`.data` derives every array once per split (frames on a timeline, word alignment, labels);
:mod:`.pickles` writes MMSA, MulT and MultiBench raw pickles and :mod:`.sdk` the SDK ``.csd`` files from it,
so fields that two releases share hold equal values (after each reader's documented conversions).
"""
from __future__ import annotations

from pathlib import Path

from mmdata.errors import ConfigError
from mmdata.synth.affect import pickles, sdk
from mmdata.synth.affect.data import assign_clips, make_split
from mmdata.synth.affect.spec import RELEASES, SPLITS, SynthSpec


def generate(spec: SynthSpec, out: Path, *, seed: int, sizes: dict[str, int], releases: tuple[str, ...]) -> Path:
    """Write the requested releases of a mini under ``out``.

    Args:
        spec: the corpus layout.
        out: output directory (created).
        seed: base seed; the same seed and sizes give byte-identical files.
        sizes: clips per split (video-disjoint).
        releases: any of "mmsa", "mult", "multibench", "sdk".

    Returns:
        ``out``, the root to hand to the corpus reader.
    """
    unknown = sorted(set(releases) - set(RELEASES))
    if unknown or not releases:
        raise ConfigError(f"releases must be a non-empty subset of {RELEASES}, got {list(releases)}")
    if any(n < 1 for n in sizes.values()):
        raise ConfigError(f"every split needs at least one clip, got {sizes}")
    out = Path(out)
    clips = assign_clips(seed, spec.name, sizes)
    data = {split: make_split(seed, spec, split, clips[split]) for split in SPLITS}
    if "mmsa" in releases:
        for variant in (True, False):
            name = "aligned_50.pkl" if variant else "unaligned_50.pkl"
            pickles.dump(out / spec.mmsa_dir / name, {s: pickles.mmsa(spec, data[s], aligned=variant) for s in SPLITS})
    if "mult" in releases:
        for variant, name in zip((True, False), spec.mult_files):
            pickles.dump(out / name, {s: pickles.mult(spec, data[s], aligned=variant) for s in SPLITS})
    if "multibench" in releases:
        pickles.dump(out / spec.multibench_file, {s: pickles.multibench(spec, data[s]) for s in SPLITS})
    if "sdk" in releases:
        sdk.write(out, spec, data)
    return out
