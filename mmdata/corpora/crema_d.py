"""CREMA-D emotion recognition (6 classes) from the raw release: ``AudioWAV/*.wav`` + ``VideoFlash/*.flv``.

Provenance (corpora.md section 6): github.com/CheyneyComputerScience/CREMA-D (Git LFS; ODbL 1.0), 7,442 clips
named ``<actor>_<sentence>_<emotion>_<level>`` (actors 1001-1091, 12 sentences, emotions ANG DIS FEA HAP NEU
SAD, levels LO MD HI XX). Labels use OGM-GE's class map {NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5}; the actor,
sentence and level parsed from the name are kept as ``meta_*`` fields.

Per clip: ``audio_spec`` is OGM-GE's ``log(|STFT| + 1e-7)`` (n_fft 512, hop 353) of the clip resampled to
``sample_rate`` and tiled to 3 s ((257, 188) at 22,050 Hz), or a 64-band log-mel of the same frames; ``video`` holds
frames decoded with decord at ``fps`` per second, resized to ``image_size`` square, as uint8 [T, S, S, 3]
(``video_format: npy``), as an MPEG-4 clip decoded to the same [T, S, S, 3] (``mp4``, ~20x smaller, lossy, read back
with decord), or as one JPEG filmstrip [T * S, S, 3] (``jpg``, ~5x smaller, lossy; the video encoder unstacks it).

Splits: ``split_by: speaker`` (default) is speaker-disjoint by a fixed rule on the actor id: ``id % 10`` in
{0, 1} -> test, 2 -> valid, else train (91 actors: 19 / 9 / 63, about TFDS's 21 / 10 / 69 % clip shares).
``split_by: ogmge`` reads OGM-GE's ``train.csv`` / ``test.csv`` (``<clip>,<EMO>``, UTF-8 BOM) from
``ogmge_lists``; those lists are clip-random and put every actor in both splits (speaker leakage), and have
no validation split: every 9th clip of train.csv (file order) is held out as valid.

Bad input (each a named Skip, counted; or a counted repair): name not matching -> ``bad_name``; emotion code unknown ->
``unknown_label``; OGM-GE label disagreeing with the name -> ``label_mismatch``; wav without flv -> ``orphan_audio``;
flv without wav -> ``orphan_video``; Git-LFS pointer instead of media -> ``lfs_pointer``; audio rules of
:mod:`mmdata.modalities.audio` (silent, empty, truncated, too short/long, unreadable; repairs ``resample`` for a wav
not at the release's 16 kHz, ``downmix``, ``clipped_audio``) and video rules of :mod:`mmdata.modalities.video`
(``no_frames``, ``bad_fps``, ``truncated_video``, ``too_long``; ``decode_timeout``: ``timeout``, ``decoder_crash``).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import CodecError, ConfigError, SampleError, check_names
from mmdata.modalities import audio, video
from mmdata.types import Features, Field, Sample, make_key

NAME = "crema_d"
URL = "https://github.com/CheyneyComputerScience/CREMA-D (clone with git lfs)"
SPLITS = ("train", "valid", "test")
CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class order
SOURCE_RATE = 16000  # AudioWAV as released (REPORTED); another rate is resampled and counted
NAME_PATTERN = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
OGMGE_VALID_EVERY = 9
_LFS = b"version https://git-lfs"


@dataclass(frozen=True)
class Options:
    """The reader options (== ``corpora.crema_d.reader`` keys)."""

    split_by: str = "speaker"
    ogmge_lists: str | None = None
    fps: float = 1.0
    image_size: int = 64
    video_format: str = "npy"
    sample_rate: int = 22050
    audio_feature: str = "stft"
    max_seconds: float = 10.0
    silence_db: float = -60.0
    decode_timeout: float | None = None

    def check(self) -> None:
        """ConfigError naming the fix for the first bad option."""
        for option, value, valid in (("split_by", self.split_by, ("speaker", "ogmge")),
                                     ("video_format", self.video_format, ("npy", "mp4", "jpg")),
                                     ("audio_feature", self.audio_feature, ("stft", "logmel"))):
            if value not in valid:
                raise ConfigError(f"{NAME}: unknown {option} {value!r}; valid: {', '.join(valid)}")
        if self.split_by == "ogmge" and (self.ogmge_lists is None or not Path(self.ogmge_lists).is_dir()):
            raise ConfigError(f"{NAME}: split_by: ogmge needs ogmge_lists, a folder holding OGM-GE's "
                              f"data/CREMAD/train.csv and test.csv (got {self.ogmge_lists!r})")
        if self.video_format == "mp4":
            _probe_mp4(self.image_size)
        if self.fps <= 0 or self.image_size < 8 or self.sample_rate < 8000:
            raise ConfigError(f"{NAME}: need fps > 0, image_size >= 8, sample_rate >= 8000 (got {self.fps}, "
                              f"{self.image_size}, {self.sample_rate})")

    def rules(self) -> audio.AudioRules:
        """The audio rules with this target rate and thresholds."""
        return audio.AudioRules(sample_rate=self.sample_rate, expected_rate=SOURCE_RATE,
                                max_seconds=self.max_seconds, silence_db=self.silence_db)


@functools.lru_cache(maxsize=None)  # options are checked on every reader call; one probe per size suffices
def _probe_mp4(size: int) -> None:
    """ConfigError unless an mp4 clip of ``size`` square frames survives the round trip (decord reads some small
    widths wrongly): one clear error up front rather than every clip skipped."""
    from mmdata.shards.codec import encode

    try:
        encode(np.zeros((1, size, size, 3), np.uint8), Field("uint8", (None, size, size, 3), "mp4", rate=1.0))
    except CodecError as exc:
        raise ConfigError(f"{NAME}: video_format mp4 with image_size {size}: {exc}; or use video_format npy") \
            from None


def _features(opts: Options) -> Features:
    """The schema for the options (spectrogram and frame shapes depend on them)."""
    steps = audio.frames(opts.sample_rate, 3.0, 353)
    bins, kind = (257, "log |STFT| + 1e-7 (n_fft 512, hop 353), OGM-GE") if opts.audio_feature == "stft" else \
        (64, "log mel power + 1e-7 (64 bands, n_fft 512, hop 353)")
    size = opts.image_size
    shape, codec, layout = ((None, size, 3), "jpg", f"[frame * {size}, W, RGB] filmstrip of square frames") \
        if opts.video_format == "jpg" else ((None, size, size, 3), opts.video_format, "[frame, H, W, RGB]")
    return {
        "audio_spec": Field("float32", (bins, steps), "npy", rate=opts.sample_rate,
                            description=f"[freq, time] {kind} of the clip at {opts.sample_rate} Hz tiled to 3 s"),
        "video": Field("uint8", shape, codec, rate=opts.fps, value_range=(0, 255),
                       description=f"{layout} decoded with decord at {opts.fps} fps, resized to {size}x{size}"),
        "label": Field("int64", (), "cls", classes=CLASSES, description="emotion from the file name"),
        "meta_actor": Field("int64", (), "json", value_range=(1001, 9999), description="actor id (speaker)"),
        "meta_sentence": Field("str", (), "txt", description="sentence code, e.g. IEO"),
        "meta_level": Field("str", (), "txt", description="intensity LO / MD / HI, XX = unspecified"),
    }


def _media(root: str | Path) -> dict[str, dict[str, Path]]:
    """stem -> {"wav": path, "flv": path} (either may be absent); ConfigError without the two folders."""
    base = require_root(root, NAME)
    folders = {"wav": base / "AudioWAV", "flv": base / "VideoFlash"}
    missing = [str(p) for p in folders.values() if not p.is_dir()]
    if missing:
        raise ConfigError(f"{NAME}: missing {missing}; expected the release's AudioWAV/ and VideoFlash/ under "
                          f"{base} ({URL})")
    clips: dict[str, dict[str, Path]] = {}
    for kind, folder in folders.items():
        for path in folder.glob(f"*.{kind}"):
            clips.setdefault(path.stem, {})[kind] = path
    return clips


def _actor(stem: str) -> int | None:
    match = re.match(r"^(\d{4})_", stem)
    return int(match.group(1)) if match else None


def speaker_split(actor: int | None) -> str:
    """The speaker-disjoint split of an actor id (unparseable names go to train, where they are skipped)."""
    if actor is None:
        return "train"
    return {0: "test", 1: "test", 2: "valid"}.get(actor % 10, "train")


def _ogmge(opts: Options) -> dict[str, dict[str, str]]:
    """split -> {clip: emotion code} from OGM-GE's lists (BOM stripped; valid = every 9th train row)."""
    out: dict[str, dict[str, str]] = {s: {} for s in SPLITS}
    for name in ("train", "test"):
        path = Path(opts.ogmge_lists) / f"{name}.csv"
        if not path.is_file():
            raise ConfigError(f"{NAME}: {path} not found (OGM-GE data/CREMAD/{name}.csv)")
        rows = [line.split(",") for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        for i, row in enumerate(rows):
            split = name if name == "test" or i % OGMGE_VALID_EVERY else "valid"
            out[split][row[0].strip()] = row[1].strip() if len(row) > 1 else ""
    return out


def _assign(clips: dict[str, dict[str, Path]], opts: Options) -> dict[str, dict[str, str | None]]:
    """split -> {stem: listed emotion code or None}, each split sorted by stem."""
    if opts.split_by == "ogmge":
        lists = _ogmge(opts)
        return {s: dict(sorted(lists[s].items())) for s in SPLITS}
    out: dict[str, dict[str, str | None]] = {s: {} for s in SPLITS}
    for stem in sorted(clips):
        out[speaker_split(_actor(stem))][stem] = None
    return out


def _parse(stem: str, listed: str | None) -> tuple[int, str, str, str]:
    """(actor, sentence, emotion, level) from a clip name; SampleError for a bad name or label."""
    match = NAME_PATTERN.match(stem)
    if not match:
        raise SampleError("bad_name", f"{stem}: not <actor>_<sentence>_<emotion>_<level>")
    actor, sentence, emotion, level = match.groups()
    if emotion not in CLASSES:
        raise SampleError("unknown_label", f"{stem}: emotion {emotion!r} not in {', '.join(CLASSES)}")
    if listed is not None and listed != emotion:
        raise SampleError("label_mismatch", f"{stem}: the split list says {listed!r}, the name {emotion!r}")
    return int(actor), sentence, emotion, level


def _paired(stem: str, paths: dict[str, Path]) -> tuple[Path, Path]:
    """(wav, flv) of a clip; SampleError when one is missing or is a Git-LFS pointer."""
    wav, flv = paths.get("wav"), paths.get("flv")
    if wav is None or flv is None:
        reason = "missing_media" if wav is flv else "orphan_audio" if flv is None else "orphan_video"
        raise SampleError(reason, f"{stem}: wav {'found' if wav else 'missing'}, flv {'found' if flv else 'missing'}")
    for path in (wav, flv):
        with open(path, "rb") as f:
            if f.read(len(_LFS)) == _LFS:  # CREMA-D#11: a plain download holds LFS pointers, not media
                raise SampleError("lfs_pointer", f"{path.name}: a Git-LFS pointer; clone with `git lfs clone`")
    return wav, flv


def _sample(stem: str, paths: dict[str, Path], listed: str | None, key: str, opts: Options) -> Sample:
    """One clip as a sample; SampleError names the rule it broke."""
    actor, sentence, emotion, level = _parse(stem, listed)
    wav, flv = _paired(stem, paths)
    wave, repairs = audio.load(wav, opts.rules())
    feature = audio.log_stft if opts.audio_feature == "stft" else audio.log_mel
    frames = video.read(flv, fps=opts.fps, size=opts.image_size, max_seconds=opts.max_seconds,
                        timeout=opts.decode_timeout)
    return {
        "__key__": key, "audio_spec": feature(wave, opts.sample_rate),
        "video": video.filmstrip(frames) if opts.video_format == "jpg" else frames,
        "label": np.int64(CLASSES.index(emotion)), "meta_actor": np.int64(actor), "meta_sentence": sentence,
        "meta_level": level, SOURCE: str(wav), **({REPAIRS: tuple(repairs)} if repairs else {}),
    }


def _options(options: dict) -> Options:
    check_names(options, Options.__dataclass_fields__, "reader option(s)", f"for corpus {NAME!r}",
                f" (fix corpora.{NAME}.reader in params.yaml, or mmdata shard's --option)")
    opts = Options(**options)
    opts.check()
    return opts


def features(root: str | Path, **options: object) -> Features:
    """The field schema for the options (shapes depend on audio_feature, sample_rate, image_size, format)."""
    return _features(_options(options))


def sources(root: str | Path, **options: object) -> list[Path]:
    """Every wav and flv file, sorted (plus the OGM-GE lists when they lie under the root)."""
    opts = _options(options)
    files = sorted(p for clip in _media(root).values() for p in clip.values())
    if opts.split_by == "ogmge":
        lists = [Path(opts.ogmge_lists) / f"{n}.csv" for n in ("train", "test")]
        files += [p for p in lists if p.resolve().is_relative_to(Path(root).resolve())]
    return files


def describe(root: str | Path, **options: object) -> str:
    """The layout found: clip counts, pairing, and the split rule with its per-split clip counts."""
    opts, clips = _options(options), _media(root)
    paired = sum(1 for c in clips.values() if len(c) == 2)
    splits = _assign(clips, opts)
    listed = {stem for s in splits.values() for stem in s}
    rule = "speaker-disjoint (actor id % 10: 0, 1 test; 2 valid)" if opts.split_by == "speaker" else \
        f"OGM-GE lists in {opts.ogmge_lists} (clip-random, speakers leak; valid = every 9th train row)"
    counts = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
    return (f"CREMA-D raw release: {sum('wav' in c for c in clips.values())} AudioWAV, "
            f"{sum('flv' in c for c in clips.values())} VideoFlash ({paired} paired); split {rule}: {counts}; "
            f"{len(set(clips) - listed)} clips in no split")


def iter_samples(root: str | Path, split: str, *, split_by: str = "speaker", ogmge_lists: str | None = None,
                 fps: float = 1.0, image_size: int = 64, video_format: str = "npy", sample_rate: int = 22050,
                 audio_feature: str = "stft", max_seconds: float = 10.0,
                 silence_db: float = -60.0, decode_timeout: float | None = None) -> Iterator[Sample | Skip]:
    """Samples of one split, sorted by clip name; one Sample or Skip per clip (wav, flv or listed name).

    Args:
        root: the release folder holding AudioWAV/ and VideoFlash/.
        split: "train", "valid" or "test".
        split_by: "speaker" (speaker-disjoint, default) or "ogmge" (OGM-GE's lists, see module docstring).
        ogmge_lists: folder with OGM-GE's train.csv and test.csv (for ``split_by: ogmge``).
        fps: video frames kept per second (OGM-GE keeps 1); image_size: the side in pixels of the square the
            frames are resized to at shard time (an int: the frames are square; the other readers' name).
        video_format: "npy" (uint8 [T, S, S, 3]), "mp4" (an MPEG-4 clip of those frames) or "jpg" (one JPEG
            filmstrip [T * S, S, 3]).
        sample_rate: audio rate of the features (OGM-GE: 22,050); audio_feature: "stft" or "logmel".
        max_seconds: longer clips are skipped (``too_long``); silence_db: quieter clips are ``silent_audio``.
        decode_timeout: None decodes video here; seconds: in a worker process, ``timeout`` / ``decoder_crash``.

    Yields:
        ``{"__key__": "crema_d/<split>/<clip>", "audio_spec", "video", "label", "meta_actor", "meta_sentence",
        "meta_level"}`` or a Skip naming the file and the rule.
    """
    yield from iter_part(root, split, 0, None, **{
        "split_by": split_by, "ogmge_lists": ogmge_lists, "fps": fps, "image_size": image_size,
        "video_format": video_format, "sample_rate": sample_rate, "audio_feature": audio_feature,
        "max_seconds": max_seconds, "silence_db": silence_db, "decode_timeout": decode_timeout})


def iter_part(root: str | Path, split: str, start: int, stop: int | None, **options: object
              ) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end); only their clips are decoded."""
    opts, split = _options(options), check_split(NAME, split, SPLITS)
    clips = _media(root)
    for stem, listed in list(_assign(clips, opts)[split].items())[start:stop]:
        key = make_key(NAME, split, stem)
        paths = clips.get(stem, {})
        try:
            yield _sample(stem, paths, listed, key, opts)
        except SampleError as err:
            source = paths.get("wav") or paths.get("flv") or Path(root) / stem
            yield Skip(key, str(source), err.reason, str(err))


def count_raw(root: str | Path, split: str, **options: object) -> RawCount:
    """Clips of one split by name (AudioWAV/, VideoFlash/, OGM-GE lists); no wav or flv is opened."""
    clips = _assign(_media(root), _options(options))[check_split(NAME, split, SPLITS)]
    return raw_count(len(clips), "clip", [Path(root) / "AudioWAV", Path(root) / "VideoFlash"])

CORPUS = Corpus(name=NAME, splits=SPLITS, task="classification", features=features, iter_samples=iter_samples,
                sources=sources, describe=describe, count_raw=count_raw, iter_part=iter_part)
