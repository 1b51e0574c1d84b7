"""The clips of a MOSI/MOSEI mini: latents, labels, frame-level features, timing and word alignment.

Everything every release holds is derived here once, so the releases written from it hold the same data:
frame sequences (COVAREP, FACET) and word vectors live on one timeline per video, and the word-aligned
sequences of the pickles are the SDK alignment of those frames (mean of the frames overlapping each word by
more than 1e-5 s), computed here independently of the reader.

Signal (as in the original MOSI mini): per clip two latents ``a, b ~ N(0, 1)``; sentiment
``clip(1.6 a + 0.9 b + 0.8 a b + N(0, 0.15), -3, 3)`` on a 0.2 grid with the clips nearest zero set to 0;
words carry ``a``, audio and vision each carry ``b`` through their own noise, so fusion beats every single
modality. A per-video offset mimics speaker style (splits are video-disjoint).
"""
from __future__ import annotations

import numpy as np

from mmdata.rng import make_rng
from mmdata.synth.affect.spec import AUDIO_RATE, DIMS, GAP, SPLITS, SynthSpec

EPSILON = 1e-5
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
_FILLER = ("i", "think", "the", "movie", "was", "um", "and", "it", "really", "just", "like", "you", "know",
           "story", "acting", "so", "but", "that", "scene", "kind", "of", "actually", "this", "one")
_OPINION = {1: ("good", "great", "loved", "amazing", "funny"), -1: ("bad", "boring", "hated", "awful", "dull")}


def assign_clips(seed: int, name: str, sizes: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """(video id, clip id) per split; each video in one split only, clips numbered from 1."""
    rng = make_rng(seed, name, "videos")
    seen: set[str] = set()
    clips: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        out: list[tuple[str, str]] = []
        while len(out) < sizes[split]:
            video = "".join(rng.choice(_ID_CHARS, 11))
            if video in seen:
                continue
            seen.add(video)
            count = min(int(rng.integers(3, 13)), sizes[split] - len(out))
            out += [(video, str(k)) for k in range(1, count + 1)]
        clips[split] = out
    return clips


def sentiment(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sentiment [N] in [-3, 3] on a 0.2 grid, the clips nearest zero set exactly to 0 (at least 3 %)."""
    y = np.clip(1.6 * a + 0.9 * b + 0.8 * a * b + rng.normal(0, 0.15, a.shape), -3, 3)
    y = np.round(y * 5) / 5
    y[np.argsort(np.abs(y), kind="stable")[:max(1, int(np.ceil(0.03 * len(y))))]] = 0.0
    return y.astype(np.float32)


def emotions(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MOSEI emotions [N, 6] (happy, sad, anger, surprise, disgust, fear) in [0, 3] on a 1/3 grid."""
    raw = np.stack([a, -a, -b, np.abs(b), -a - b, -b + 0.5 * a], axis=1) + rng.normal(0, 0.3, (len(a), 6))
    return (np.round(np.clip(raw, 0, 3) * 3) / 3).astype(np.float32)


def directions(seed: int, spec: SynthSpec) -> dict[str, np.ndarray]:
    """One unit vector per sequence carrying its latent; on MOSI only the columns the pickles keep carry it."""
    dims = {**DIMS, **{v: d for v, (d, _, _) in spec.vision.items()}}
    keep = {"covarep": spec.pickle_audio, spec.pickle_vision[0]: spec.pickle_vision[1]}
    out = {}
    for name, dim in dims.items():
        direction = make_rng(seed, spec.name, "direction", name).normal(size=dim)
        if keep.get(name) is not None:
            direction[np.setdiff1d(np.arange(dim), keep[name])] = 0.0  # other columns: uninformative
        # Not np.linalg.norm: on a vector it is a BLAS dot, whose rounding depends on the kernel and CPU.
        out[name] = direction / np.sqrt(np.sum(direction * direction))
    return out


def tiles(start: float, end: float, count: int) -> np.ndarray:
    """[count, 2] intervals evenly tiling [start, end] (seconds, float64)."""
    edges = start + (end - start) * np.arange(count + 1) / count
    return np.stack([edges[:-1], edges[1:]], axis=1)


def word_means(frames: np.ndarray, spans: np.ndarray, words: np.ndarray) -> np.ndarray:
    """[W, D] float32: per word, the mean of the frames overlapping it by more than EPSILON."""
    overlap = np.minimum(spans[None, :, 1], words[:, None, 1]) - np.maximum(spans[None, :, 0], words[:, None, 0])
    return np.stack([frames[row > EPSILON].astype(np.float64).mean(axis=0) for row in overlap]).astype(np.float32)


def raw_text(rng: np.random.Generator, a: np.ndarray, words: np.ndarray) -> list[str]:
    """One transcript per clip: filler words plus one opinion word whose polarity follows ``a``."""
    texts = []
    for latent, count in zip(a, words):
        tokens = list(rng.choice(_FILLER, int(count) - 1))
        tokens.insert(int(rng.integers(0, count)), str(rng.choice(_OPINION[1 if latent >= 0 else -1])))
        texts.append(" ".join(tokens))
    return texts


def _frames(rng: np.random.Generator, signal: float, direction: np.ndarray, offset: np.ndarray,
            count: int) -> np.ndarray:
    """[count, dim] float32 frames = signal * direction + offset + N(0, 1)."""
    return (signal * direction + offset + rng.normal(size=(count, direction.shape[0]))).astype(np.float32)


def _offsets(seed: int, spec: SynthSpec, video: str) -> dict[str, np.ndarray]:
    """Per-video offset vector per sequence (speaker style)."""
    dims = {**DIMS, **{v: d for v, (d, _, _) in spec.vision.items()}}
    return {n: make_rng(seed, spec.name, "video", video, n).normal(0, 0.3, d) for n, d in dims.items()}


def _timing(clips: list[tuple[str, str]], audio_len: np.ndarray, vision_len: np.ndarray,
            words: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per clip: segment [start, end] on its video's timeline (a GAP before each), and the word/frame spans.

    A segment lasts ``audio frames / 100`` s (COVAREP's rate); words and vision frames tile it evenly; the
    gap holds 2 audio frames and 1 vision frame that belong to no segment.
    """
    clock: dict[str, float] = {}
    out = []
    for i, (video, _) in enumerate(clips):
        gap_start = clock.get(video, 0.0)
        start = gap_start + GAP
        end = start + audio_len[i] / AUDIO_RATE
        clock[video] = end
        out.append({"segment": np.array([start, end]), "words": tiles(start, end, int(words[i])),
                    "audio": tiles(start, end, int(audio_len[i])), "vision": tiles(start, end, int(vision_len[i])),
                    "gap_audio": tiles(gap_start, start, 2), "gap_vision": tiles(gap_start, start, 1)})
    return out


def _clip_frames(seed: int, spec: SynthSpec, split: str, i: int, video: str, latents: dict[str, float],
                 lengths: dict[str, int], dirs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Word vectors [W, 300], COVAREP [La, 74], each vision sequence [Lv, d], and the gap frames of one clip."""
    rng, offsets = make_rng(seed, spec.name, split, "frames", i), _offsets(seed, spec, video)
    out = {"glove": _frames(rng, 3.0 * latents["text"], dirs["glove"], offsets["glove"], lengths["words"]),
           "covarep": _frames(rng, 1.5 * latents["audio"], dirs["covarep"], offsets["covarep"], lengths["audio"]),
           "gap_covarep": _frames(rng, 0.0, dirs["covarep"], offsets["covarep"], 2)}
    for name in spec.vision:
        out[name] = _frames(rng, 1.5 * latents["vision"], dirs[name], offsets[name], lengths["vision"])
        out[f"gap_{name}"] = _frames(rng, 0.0, dirs[name], offsets[name], 1)
    columns = spec.pickle_audio or tuple(range(DIMS["covarep"]))
    if rng.random() < 0.15:  # as in the releases, some COVAREP values are -inf (log of 0)
        for _ in range(int(rng.integers(1, 4))):
            out["covarep"][int(rng.integers(lengths["audio"])), int(rng.choice(columns))] = -np.inf
    return out


def _bert(seed: int, spec: SynthSpec, split: str, clips: list, text_a: np.ndarray, words: np.ndarray,
          dirs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """MMSA's BERT-like text [N, 50, 768] (right-padded tokens) and ``text_bert`` [N, 3, 50] float32."""
    rng = make_rng(seed, spec.name, split, "bert")
    mask = np.arange(50)[None, :] < (words + 2)[:, None]  # [CLS] + one piece per word + [SEP]
    offsets = np.stack([_offsets(seed, spec, v)["bert"] for v, _ in clips])
    frames = (3.0 * text_a)[:, None, None] * dirs["bert"] + offsets[:, None, :] + rng.normal(size=(*mask.shape, 768))
    ids = rng.integers(1000, 30000, mask.shape) * mask
    ids[:, 0] = 101
    ids[np.arange(len(words)), words + 1] = 102
    tokens = np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32)
    return (frames * mask[:, :, None]).astype(np.float32), tokens


def make_split(seed: int, spec: SynthSpec, split: str, clips: list[tuple[str, str]]) -> dict:
    """Every array any release of one split needs (see the module docstring)."""
    n, dirs = len(clips), directions(seed, spec)
    rng = make_rng(seed, spec.name, split, "latent")
    a, b = rng.normal(size=n), rng.normal(size=n)
    words = rng.integers(6, 41, n)
    audio_len = np.clip(np.round(words * 7.5 + rng.normal(0, 12, n)), 10, spec.unaligned_len["audio"]).astype(int)
    vision_len = np.clip(np.round(words * 10 + rng.normal(0, 15, n)), 10, spec.unaligned_len["vision"]).astype(int)
    text_a, audio_b, vision_b = a + rng.normal(0, 0.1, n), b + rng.normal(0, 0.5, n), b + rng.normal(0, 0.5, n)
    data = {"clips": clips, "labels": sentiment(rng, a, b), "words": words, "audio_len": audio_len,
            "vision_len": vision_len, "emotions": emotions(rng, a, b) if spec.emotions else None,
            "raw_text": raw_text(make_rng(seed, spec.name, split, "words"), a, words),
            "timing": _timing(clips, audio_len, vision_len, words)}
    data["bert"], data["text_bert"] = _bert(seed, spec, split, clips, text_a, words, dirs)
    data["frames"] = [_clip_frames(seed, spec, split, i, clips[i][0],
                                   {"text": text_a[i], "audio": audio_b[i], "vision": vision_b[i]},
                                   {"words": words[i], "audio": audio_len[i], "vision": vision_len[i]}, dirs)
                      for i in range(n)]
    data["aligned"] = [{name: word_means(frames[name], timing[kind], timing["words"])
                        for name, kind in [("covarep", "audio"), *((v, "vision") for v in spec.vision)]}
                       for frames, timing in zip(data["frames"], data["timing"])]
    return data
