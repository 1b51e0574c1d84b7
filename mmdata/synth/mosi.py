"""Synthetic mini CMU-MOSI in both real pickle layouts (MMSA and MulT), holding the same clips.

Files written under ``out`` (shapes as in /work/shared/corpora.md section 4):

- ``MOSI/Processed/aligned_50.pkl`` and ``unaligned_50.pkl`` (MMSA): BERT-like text [N, 50, 768],
  ``text_bert`` [N, 3, 50], audio [N, La, 5], vision [N, Lv, 20], raw text, ids ``"<video>$_$<clip>"``,
  annotations, classification and regression labels; the unaligned file adds ``audio_lengths`` and
  ``vision_lengths``.
- ``mosi_data.pkl`` and ``mosi_data_noalign.pkl`` (MulT): GloVe-like text [N, 50, 300], audio, vision,
  ``labels`` [N, 1, 1] and ``id`` [N, 3] byte strings ``(video, clip, start seconds)`` (the third column's
  meaning in the real file is unverified; readers use the first two).

Aligned audio/vision are [N, 50, dim], left-zero-padded (MulT convention) and identical in both families;
unaligned audio [N, 375, 5] and vision [N, 500, 20] hold each clip's true length then zeros, identical in
both families. As in the releases, a few audio entries inside the true length are ``-inf``.

Learnable signal: per clip two latents ``a, b ~ N(0, 1)``; the sentiment is
``y = clip(1.6 a + 0.9 b + 0.8 a b + N(0, 0.15), -3, 3)`` rounded to multiples of 0.2 (MOSI labels average
five annotators), and the clips nearest zero in each split are set exactly to 0 (at least 3 %), because
MOSI has neutral clips and the has-zero/non-zero binary metrics differ on them. Text tokens carry ``a``
(plus a little per-clip noise), audio and vision each carry ``b`` through their own per-clip noise
(``N(0, 0.5)``), so a text-only model misses ``0.9 b + 0.8 a b`` (about a third of the variance), an
audio/vision-only model misses ``1.6 a`` and fusing all three is clearly best on MAE and binary accuracy.
A per-video offset on every modality mimics speaker style, which is why splits are video-disjoint.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mmdata.rng import make_rng

SPLITS = ("train", "valid", "test")
ALIGNED_LEN = 50
UNALIGNED_LEN = {"audio": 375, "vision": 500}
DIMS = {"audio": 5, "vision": 20, "glove": 300, "bert": 768}
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
_FILLER = ("i", "think", "the", "movie", "was", "um", "and", "it", "really", "just", "like", "you", "know",
           "story", "acting", "so", "but", "that", "scene", "kind", "of", "actually", "this", "one")
_OPINION = {1: ("good", "great", "loved", "amazing", "funny"),
            -1: ("bad", "boring", "hated", "awful", "dull")}


def generate(out: Path, *, seed: int = 0, train: int = 160, valid: int = 40, test: int = 80) -> Path:
    """Write the four MOSI pickles (MMSA aligned/unaligned, MulT aligned/noalign) under ``out``.

    Args:
        out: output directory (created).
        seed: base seed; the same seed gives byte-identical pickles.
        train, valid, test: clips per split (video-disjoint splits).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.mosi`.
    """
    sizes = {"train": train, "valid": valid, "test": test}
    if any(n < 1 for n in sizes.values()):
        raise ValueError(f"every split needs at least one clip, got {sizes}")
    out = Path(out)
    clips = _assign_clips(seed, sizes)
    data = {split: _make_split(seed, split, clips[split]) for split in SPLITS}
    processed = out / "MOSI" / "Processed"
    processed.mkdir(parents=True, exist_ok=True)
    _dump(processed / "aligned_50.pkl", {s: _mmsa(data[s], aligned=True) for s in SPLITS})
    _dump(processed / "unaligned_50.pkl", {s: _mmsa(data[s], aligned=False) for s in SPLITS})
    _dump(out / "mosi_data.pkl", {s: _mult(data[s], aligned=True) for s in SPLITS})
    _dump(out / "mosi_data_noalign.pkl", {s: _mult(data[s], aligned=False) for s in SPLITS})
    return out


def _dump(path: Path, obj: dict) -> None:
    # Protocol 4 is what the releases' Python 3 loaders read, and pinning it keeps the bytes stable.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _assign_clips(seed: int, sizes: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """(video id, clip id) pairs per split; each video lands in one split only, clips numbered from 1."""
    rng = make_rng(seed, "mosi", "videos")
    seen: set[str] = set()
    clips: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        rows: list[tuple[str, str]] = []
        while len(rows) < sizes[split]:
            video = "".join(rng.choice(_ID_CHARS, 11))
            if video in seen:
                continue
            seen.add(video)
            count = min(int(rng.integers(3, 13)), sizes[split] - len(rows))
            rows += [(video, str(k)) for k in range(1, count + 1)]
        clips[split] = rows
    return clips


def _labels(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sentiment [N] in [-3, 3] on a 0.2 grid with the clips nearest zero set exactly to 0."""
    y = np.clip(1.6 * a + 0.9 * b + 0.8 * a * b + rng.normal(0, 0.15, a.shape), -3, 3)
    y = np.round(y * 5) / 5
    n_zero = max(1, int(np.ceil(0.03 * len(y))))
    y[np.argsort(np.abs(y), kind="stable")[:n_zero]] = 0.0
    return y.astype(np.float32)


def _make_split(seed: int, split: str, clips: list[tuple[str, str]]) -> dict:
    """Latents, labels, lengths and every feature array of one split (shared by all four files)."""
    n = len(clips)
    rng = make_rng(seed, "mosi", split, "latent")
    a, b = rng.normal(size=n), rng.normal(size=n)
    words = rng.integers(6, 41, n)
    # Unaligned frame counts grow with the words spoken; the longest clips hit the release's padded length.
    audio_len = np.clip(np.round(words * 7.5 + rng.normal(0, 12, n)), 10, UNALIGNED_LEN["audio"]).astype(int)
    vision_len = np.clip(np.round(words * 10 + rng.normal(0, 15, n)), 10, UNALIGNED_LEN["vision"]).astype(int)
    offsets, dirs = _video_offsets(seed, clips), _directions(seed)
    text_a = a + rng.normal(0, 0.1, n)
    # Audio and vision see b through independent noise, so combining them beats either alone.
    audio_b, vision_b = b + rng.normal(0, 0.5, n), b + rng.normal(0, 0.5, n)
    left = np.arange(ALIGNED_LEN)[None, :] >= ALIGNED_LEN - words[:, None]
    audio_mask, vision_mask = _right_mask(audio_len, "audio"), _right_mask(vision_len, "vision")

    def seq(tag: str, name: str, latent: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
        noise_rng = make_rng(seed, "mosi", split, tag)
        return _sequence(noise_rng, latent * scale, mask, offsets[name], dirs[name])

    split_data = {
        "clips": clips, "labels": _labels(rng, a, b), "words": words,
        "raw_text": _raw_text(make_rng(seed, "mosi", split, "words"), a, words),
        "glove": seq("glove", "glove", text_a, left, 3.0),
        "bert": seq("bert", "bert", text_a, _bert_mask(words), 3.0),
        "text_bert": _text_bert(make_rng(seed, "mosi", split, "tokens"), words),
        "audio_al": seq("audio_al", "audio", audio_b, left, 1.5),
        "vision_al": seq("vision_al", "vision", vision_b, left, 1.5),
        "audio_un": seq("audio_un", "audio", audio_b, audio_mask, 1.5),
        "vision_un": seq("vision_un", "vision", vision_b, vision_mask, 1.5),
        "audio_len": audio_len, "vision_len": vision_len,
    }
    _inject_neg_inf(make_rng(seed, "mosi", split, "neginf"), split_data)
    return split_data


def _video_offsets(seed: int, clips: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Per-clip copies [N, dim] of a per-video offset vector per modality (mimics speaker style)."""
    videos = list(dict.fromkeys(v for v, _ in clips))
    out = {}
    for name in ("glove", "bert", "audio", "vision"):
        per_video = {v: make_rng(seed, "mosi", "video", v, name).normal(0, 0.3, DIMS[name]) for v in videos}
        out[name] = np.stack([per_video[v] for v, _ in clips])
    return out


def _directions(seed: int) -> dict[str, np.ndarray]:
    """One unit vector [dim] per modality carrying its latent; split-independent so models transfer."""
    out = {}
    for name in ("glove", "bert", "audio", "vision"):
        direction = make_rng(seed, "mosi", "direction", name).normal(size=DIMS[name])
        out[name] = direction / np.linalg.norm(direction)
    return out


def _sequence(rng: np.random.Generator, signal: np.ndarray, mask: np.ndarray, offset: np.ndarray,
              direction: np.ndarray) -> np.ndarray:
    """Frame features [N, L, dim] = signal * direction + offset + N(0, 1) on valid frames, 0 on padding.

    Args:
        signal: [N] per-clip latent strength; mask: [N, L] valid frames; offset: [N, dim]; direction: [dim].
    """
    noise = rng.normal(size=(*mask.shape, direction.shape[0]))
    frames = signal[:, None, None] * direction + offset[:, None, :] + noise
    return (frames * mask[:, :, None]).astype(np.float32)


def _right_mask(lengths: np.ndarray, name: str) -> np.ndarray:
    """[N, L] mask of the first ``lengths`` frames (unaligned sequences are zero-padded after the clip)."""
    return np.arange(UNALIGNED_LEN[name])[None, :] < lengths[:, None]


def _bert_mask(words: np.ndarray) -> np.ndarray:
    """[N, 50] mask of [CLS] + one word piece per word + [SEP], right-padded as BERT tokenizers pad."""
    return np.arange(ALIGNED_LEN)[None, :] < (words + 2)[:, None]


def _text_bert(rng: np.random.Generator, words: np.ndarray) -> np.ndarray:
    """[N, 3, 50] float32 rows [input_ids, input_mask, segment_ids] as MMSA stores them."""
    mask = _bert_mask(words)
    ids = rng.integers(1000, 30000, mask.shape) * mask
    ids[:, 0] = 101  # [CLS]
    ids[np.arange(len(words)), words + 1] = 102  # [SEP]
    return np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32)


def _raw_text(rng: np.random.Generator, a: np.ndarray, words: np.ndarray) -> list[str]:
    """One transcript per clip: filler words plus one opinion word whose polarity follows ``a``."""
    texts = []
    for latent, count in zip(a, words):
        tokens = list(rng.choice(_FILLER, int(count) - 1))
        tokens.insert(int(rng.integers(0, count)), str(rng.choice(_OPINION[1 if latent >= 0 else -1])))
        texts.append(" ".join(tokens))
    return texts


def _inject_neg_inf(rng: np.random.Generator, data: dict) -> None:
    """Put 1-3 ``-inf`` entries inside the true length of ~15 % of the clips' audio (aligned and not)."""
    for i in np.flatnonzero(rng.random(len(data["words"])) < 0.15):
        for _ in range(int(rng.integers(1, 4))):
            dim = int(rng.integers(DIMS["audio"]))
            data["audio_al"][i, ALIGNED_LEN - 1 - int(rng.integers(data["words"][i])), dim] = -np.inf
            data["audio_un"][i, int(rng.integers(data["audio_len"][i])), dim] = -np.inf


def _mmsa(data: dict, *, aligned: bool) -> dict:
    """One split in the MMSA layout (keys in the release's order)."""
    labels = data["labels"]
    sign = np.sign(labels).astype(np.int64)
    split = {
        "raw_text": np.array(data["raw_text"], dtype=object),
        "audio": data["audio_al" if aligned else "audio_un"],
        "vision": data["vision_al" if aligned else "vision_un"],
        "id": np.array([f"{v}$_${c}" for v, c in data["clips"]], dtype=object),
        "text": data["bert"],
        "text_bert": data["text_bert"],
        "annotations": np.array([("Negative", "Neutral", "Positive")[s + 1] for s in sign], dtype=object),
        "classification_labels": (sign + 1).astype(np.float32),
        "regression_labels": labels,
    }
    if not aligned:
        split["audio_lengths"] = data["audio_len"]
        split["vision_lengths"] = data["vision_len"]
    return split


def _mult(data: dict, *, aligned: bool) -> dict:
    """One split in the MulT layout; left-padded GloVe text, no lengths, labels [N, 1, 1]."""
    ids = [(v.encode(), c.encode(), f"{3.2 * (int(c) - 1):.2f}".encode()) for v, c in data["clips"]]
    return {
        "vision": data["vision_al" if aligned else "vision_un"],
        "audio": data["audio_al" if aligned else "audio_un"],
        "text": data["glove"],
        "labels": data["labels"].reshape(-1, 1, 1),
        "id": np.array(ids, dtype="S"),
    }
