"""Synthetic mini CREMA-D in the release layout: ``AudioWAV/*.wav`` (16 kHz mono PCM-16, soundfile) and
``VideoFlash/*.flv`` (Sorenson H.263 in FLV, 64x64 at 10 fps, written by OpenCV's FFmpeg backend, read by decord).
Both are byte-identical on every machine with the same opencv-python wheel: samples are quantised to PCM here,
not by libsndfile, and FFmpeg's version string is removed from the FLV metadata.

Clips follow the release's design: per actor, sentence IEO with five emotions x levels LO/MD/HI plus NEU XX,
and every other sentence with the six emotions at level XX; actors from 1001, 1-2 s per clip.

Signal, split between the modalities so that fusion beats each: with OGM-GE's class index ``e``
(NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5) the audio carries ``e // 2`` as the formant band of a harmonic
voice (500 / 1,500 / 3,000 Hz; the pitch, loudness and timbre vary per actor and clip) and the video
carries ``e % 2`` as the colour of a face-like ellipse (warm or cool, the tone varying per actor; 10 % of
the clips show the other colour). Audio alone can reach 1/2, video alone 1/3, both together ~0.9.

``broken=True`` adds the release's kinds of bad clips on training actors, each caught by a reader rule:
a silent wav, a zero-length wav, a minute-long clip, a wav at 44.1 kHz (resampled), a stereo wav (downmixed),
a clipped wav (flagged), an flv with no decodable frame, a wav without flv, an flv without wav and an
unknown emotion code.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
LEVELS = {"LO": 0.25, "MD": 0.4, "HI": 0.6, "XX": 0.4}
RATE, FPS, SIZE = 16000, 10.0, 64
FORMANTS = (500.0, 1500.0, 3000.0)
#: FLV's codec tag for Sorenson H.263 ("FLV1"); the fourcc string works too but logs a fallback per file.
FLV_TAG = 2
#: The onMetaData entry in which FFmpeg names its own version ("Lavf63.1.102"): AMF0 key, then a string value.
_ENCODER_ENTRY = b"\x00\x07encoder\x02"


def clip_names(actors: int, sentences: int) -> list[str]:
    """Clip names ``<actor>_<sentence>_<emotion>_<level>`` in the release's design."""
    names = []
    for actor in range(1001, 1001 + actors):
        names += [f"{actor}_IEO_{e}_{lv}" for e in EMOTIONS[1:] for lv in ("LO", "MD", "HI")]
        names.append(f"{actor}_IEO_NEU_XX")
        names += [f"{actor}_{s}_{e}_XX" for s in SENTENCES[1:sentences] for e in EMOTIONS]
    return names


def _actor_style(seed: int, actor: int) -> dict[str, float]:
    rng = make_rng(seed, "crema_d", "actor", actor)
    return {"pitch": rng.uniform(110, 240), "loud": rng.uniform(0.8, 1.2), "tone": rng.uniform(-25, 25),
            "dx": rng.uniform(-5, 5), "dy": rng.uniform(-4, 4), "size": rng.uniform(-2, 3)}


def voice(rng: np.random.Generator, seconds: float, group: int, style: dict, level: str,
          rate: int = RATE) -> np.ndarray:
    """A harmonic voice [samples] float in [-1, 1]: pitch per actor, spectral peak at FORMANTS[group]."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = style["pitch"] * rng.uniform(0.9, 1.1) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 4) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    centre = FORMANTS[group] * rng.uniform(0.9, 1.1)
    mean_f0 = float(f0.mean())
    harmonics = [h for h in range(1, int(7000 / mean_f0)) if abs(h * mean_f0 - centre) < 900]
    # math.exp (libm), not np.exp: numpy has its own AVX-512 exp whose roundings differ by CPU.
    wave = sum(math.exp(-((h * mean_f0 - centre) / 450) ** 2) * np.sin(h * phase) for h in harmonics)
    syllables = 0.3 + 0.7 * np.sin(np.pi * rng.uniform(3, 5) * t) ** 2
    edges = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    wave = wave / max(np.abs(wave).max(), 1e-9) * syllables * edges
    return np.clip(LEVELS[level] * style["loud"] * wave + rng.normal(0, 0.01, len(t)), -1, 1)


def face_frames(rng: np.random.Generator, seconds: float, warm: bool, style: dict) -> np.ndarray:
    """Frames [T, 64, 64, 3] uint8 BGR: a face-like ellipse, warm or cool, with a moving mouth."""
    colour = np.array([70, 120, 200] if warm else [200, 150, 90], dtype=float) + style["tone"]
    count = max(2, round(seconds * FPS))
    noise = rng.normal(0, 6, (count, SIZE, SIZE, 3)).astype(np.float32)
    frames = []
    for k in range(count):
        frame = np.full((SIZE, SIZE, 3), 110, np.uint8)
        centre = (int(32 + style["dx"] + np.sin(k / 4)), int(30 + style["dy"]))
        axes = (int(14 + style["size"]), int(19 + style["size"]))
        cv2.ellipse(frame, centre, axes, 0, 0, 360, tuple(int(c) for c in np.clip(colour, 0, 255)), -1)
        for side in (-6, 6):
            cv2.circle(frame, (centre[0] + side, centre[1] - 5), 2, (30, 30, 30), -1)
        cv2.ellipse(frame, (centre[0], centre[1] + 9), (5, 1 + k % 4), 0, 0, 360, (40, 30, 60), -1)
        frames.append(np.clip(frame + noise[k], 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_flv(path: Path, frames: np.ndarray, fps: float = FPS) -> None:
    """Encode BGR frames [T, H, W, 3] into an FLV file (FFmpeg through OpenCV)."""
    writer = cv2.VideoWriter(str(path), FLV_TAG, fps, (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write FLV ({path}); its FFmpeg backend is missing")
    for frame in frames:
        writer.write(frame)
    writer.release()
    _strip_encoder(path)


def _strip_encoder(path: Path) -> None:
    """Drop the ``encoder`` entry (FFmpeg's version, e.g. "Lavf63.1.102") from an FLV's onMetaData, in place.

    FFmpeg leaves it out in bitexact mode, which OpenCV's writer cannot ask for; kept, it makes the files of
    two machines with different opencv-python wheels differ even where the video is the same. The script tag's
    size, its PreviousTagSize, the array count and the stored ``filesize`` are updated. A file without a script
    tag (no frame written) is left as it is.
    """
    data = bytearray(path.read_bytes())
    if len(data) < 24 or data[13] != 0x12:  # the first tag of FFmpeg's FLV is the onMetaData script tag
        return
    size = int.from_bytes(data[14:17], "big")
    at = data.find(_ENCODER_ENTRY, 24, 24 + size)
    if at < 0:
        return
    value_at = at + len(_ENCODER_ENTRY)
    end = value_at + 2 + int.from_bytes(data[value_at:value_at + 2], "big")
    del data[at:end]
    size -= end - at
    data[14:17] = size.to_bytes(3, "big")
    data[24 + size:28 + size] = (11 + size).to_bytes(4, "big")  # PreviousTagSize = tag header + data
    count_at = data.find(b"\x08", 24, 24 + size) + 1  # ECMA array after the "onMetaData" name
    data[count_at:count_at + 4] = (int.from_bytes(data[count_at:count_at + 4], "big") - 1).to_bytes(4, "big")
    filesize = data.find(b"\x00\x08filesize\x00", 24, 24 + size)
    if filesize >= 0:
        data[filesize + 11:filesize + 19] = struct.pack(">d", float(len(data)))
    path.write_bytes(bytes(data))


def write_wav(path: Path, wave: np.ndarray, rate: int = RATE) -> None:
    """PCM-16 WAV (mono [samples] or multi-channel [samples, channels]) from float samples in [-1, 1].

    Quantised here (``rint(x * 32768)`` clipped to the int16 range) and handed to libsndfile as int16, which it
    writes unchanged: its own float conversion depends on the release and mode (libsndfile 1.2.2, in soundfile
    0.14, writes ``floor(x * 32768)``; its sources hold ``lrint(x * 0x7FFF)`` and clipped ``lrint(x * 0x8000)``
    paths too), so the bytes would depend on the soundfile wheel installed.
    """
    pcm = np.clip(np.rint(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, rate, subtype="PCM_16")


def _clip(out: Path, seed: int, name: str) -> None:
    """Write one well-formed clip (wav and flv) with the label signal."""
    actor, _, emotion, level = name.split("_")
    rng, style = make_rng(seed, "crema_d", "clip", name), _actor_style(seed, int(actor))
    label = EMOTIONS.index(emotion)
    seconds = rng.uniform(1.0, 2.0)
    write_wav(out / "AudioWAV" / f"{name}.wav", voice(rng, seconds, label // 2, style, level))
    warm = (label % 2 == 0) != (rng.random() < 0.1)
    write_flv(out / "VideoFlash" / f"{name}.flv", face_frames(rng, seconds, warm, style))


def _broken(out: Path, seed: int) -> None:
    """Replace or add the bad clips listed in the module docstring (all on training actors 1003-1009)."""
    rng, style = make_rng(seed, "crema_d", "broken"), _actor_style(seed, 1005)
    audio, videos = out / "AudioWAV", out / "VideoFlash"
    write_wav(audio / "1003_TIE_SAD_XX.wav", np.zeros(RATE, dtype=np.float32))  # silent (cf. 1076_MTI_SAD_XX)
    write_wav(audio / "1004_TIE_SAD_XX.wav", np.zeros(0, dtype=np.float32))  # zero-length (cf. 1064_TIE_SAD_XX)
    write_wav(audio / "1005_IEO_DIS_MD.wav", voice(rng, 61.0, 2, style, "MD"))  # a minute long (the same name)
    write_flv(videos / "1005_IEO_DIS_MD.flv", face_frames(rng, 61.0, True, style))
    write_wav(audio / "1006_TIE_FEA_XX.wav", voice(rng, 1.5, 1, style, "XX", rate=44100), 44100)
    wave = voice(rng, 1.5, 1, style, "XX")
    write_wav(audio / "1006_TIE_SAD_XX.wav", np.stack([wave, wave], axis=1))  # stereo
    write_wav(audio / "1007_TIE_ANG_XX.wav", np.clip(wave * 20, -1, 1))  # clipped
    flv = (videos / "1008_TIE_HAP_XX.flv").read_bytes()
    (videos / "1008_TIE_HAP_XX.flv").write_bytes(flv[:13])  # FLV header only: no decodable frame
    (videos / "1009_TIE_NEU_XX.flv").unlink()  # wav without flv
    (audio / "1003_TIE_NEU_XX.wav").unlink()  # flv without wav
    write_wav(audio / "1004_TIE_CAL_XX.wav", wave)  # an emotion code CREMA-D does not have
    write_flv(videos / "1004_TIE_CAL_XX.flv", face_frames(rng, 1.5, True, style))


def generate(out: Path, *, seed: int = 0, actors: int = 12, sentences: int = 6, broken: bool = True) -> Path:
    """Write the CREMA-D mini under ``out``.

    Args:
        out: output directory (created).
        seed: base seed; the same seed gives the same media.
        actors: actors 1001, 1002, ...; the speaker split puts ids ending 0/1 in test and 2 in valid, so at
            least 12 actors are needed for three non-empty splits.
        sentences: how many of the 12 sentences (IEO first, 16 clips; each other one adds 6 clips per actor).
        broken: add the bad clips of the module docstring (9 skips and 3 repairs on the train split).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.crema_d`.
    """
    if actors < 1 or not 1 <= sentences <= len(SENTENCES):
        raise ConfigError(f"need actors >= 1 and 1 <= sentences <= 12, got {actors}, {sentences}")
    if broken and (actors < 9 or sentences < 2):
        raise ConfigError("broken=True replaces clips of actors 1003-1009 and sentence TIE: use actors >= 9 and "
                         "sentences >= 2, or broken=False")
    out = Path(out)
    for folder in ("AudioWAV", "VideoFlash"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for name in clip_names(actors, sentences):
        _clip(out, seed, name)
    if broken:
        _broken(out, seed)
    return out
