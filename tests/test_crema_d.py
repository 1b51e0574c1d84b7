"""CREMA-D: the synthetic mini's real WAV/FLV files, the reader's rules and splits, and the video encoder."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import mmdata
from methods import late_fusion
from methods.blocks import VideoEncoder, build_encoder, encoder_kind
from mmdata.corpora import crema_d, get_corpus
from mmdata.corpora.base import REPAIRS, SOURCE, Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.shards.build import shard_corpus
from mmdata.shards.collate import collate
from mmdata.synth import SYNTHS
from mmdata.synth.crema_d import generate, voice, write_flv
from mmdata.types import KEY_PATTERN, Field

#: The bad clips of the synthetic mini (all on training actors) and the rule each one breaks.
BROKEN = {"1003_TIE_SAD_XX": "silent_audio", "1004_TIE_SAD_XX": "empty_audio", "1005_IEO_DIS_MD": "too_long",
          "1008_TIE_HAP_XX": "no_frames", "1009_TIE_NEU_XX": "orphan_audio", "1003_TIE_NEU_XX": "orphan_video",
          "1004_TIE_CAL_XX": "unknown_label"}
REPAIRED = {"1006_TIE_FEA_XX": ("resample",), "1006_TIE_SAD_XX": ("downmix",), "1007_TIE_ANG_XX": ("clipped_audio",)}
SPLIT_CLIPS = {"train": 7 * 22 + 1, "valid": 2 * 22, "test": 3 * 22}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 actors x 2 sentences (22 clips each) plus the bad clips."""
    return generate(tmp_path_factory.mktemp("crema_d"), seed=0, actors=12, sentences=2)


@pytest.fixture(scope="module")
def splits(root: Path) -> dict[str, list]:
    return {split: list(crema_d.iter_samples(root, split)) for split in crema_d.SPLITS}


def samples_of(items: list) -> list[dict]:
    return [s for s in items if isinstance(s, dict)]


def test_registered_and_configured():
    assert get_corpus("crema_d") is crema_d.CORPUS and SYNTHS["crema_d"] is generate
    assert crema_d.CORPUS.task == "classification" and crema_d.CORPUS.splits == ("train", "valid", "test")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert set(params["corpora"]["crema_d"]["reader"]) <= crema_d.CORPUS.options()
    assert {"fused", "audio", "video"} <= set(params["experiments"]["crema_d"])  # fused vs each modality


def test_mini_is_real_wav_and_flv_read_by_decord(root):
    import decord

    wavs, flvs = sorted((root / "AudioWAV").glob("*.wav")), sorted((root / "VideoFlash").glob("*.flv"))
    assert len(wavs) == len(flvs) == 12 * 22 + 1 - 1
    info = sf.info(str(root / "AudioWAV/1001_IEO_ANG_HI.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    assert 1.0 <= info.duration <= 2.0
    for flv in flvs:
        assert flv.read_bytes()[:3] == b"FLV"
        if flv.stem == "1008_TIE_HAP_XX":
            continue  # header only: the no_frames case
        reader = decord.VideoReader(str(flv))
        assert len(reader) >= 10 and reader.get_avg_fps() == pytest.approx(10.0)
        assert reader[0].asnumpy().shape == (64, 64, 3)


def test_counts_reconcile_and_each_rule_names_its_clip(splits):
    for split, items in splits.items():
        assert len(items) == SPLIT_CLIPS[split]
        skips = {s.key.rsplit("/", 1)[1]: s.reason for s in items if isinstance(s, Skip)}
        assert skips == (BROKEN if split == "train" else {})
        repairs = {s["__key__"].rsplit("/", 1)[1]: s[REPAIRS] for s in samples_of(items) if REPAIRS in s}
        assert repairs == (REPAIRED if split == "train" else {})


def test_samples_pass_the_schema_and_splits_are_speaker_disjoint(root, splits):
    features = crema_d.features(root)
    actors = {}
    for split, items in splits.items():
        keys = [s["__key__"] for s in samples_of(items)]
        assert len(set(keys)) == len(keys) and all(KEY_PATTERN.match(k) for k in keys)
        for sample in samples_of(items):
            clean = {k: v for k, v in sample.items() if k not in (REPAIRS, SOURCE)}
            check_sample(clean, features)
            stem = sample["__key__"].rsplit("/", 1)[1]
            assert crema_d.CLASSES[int(sample["label"])] == stem.split("_")[2]
            assert int(sample["meta_actor"]) == int(stem[:4]) and sample["meta_level"] == stem[-2:]
        actors[split] = {int(s["meta_actor"]) for s in samples_of(items)}
    assert actors == {"train": set(range(1003, 1010)), "valid": {1002, 1012}, "test": {1001, 1010, 1011}}
    sample = samples_of(splits["test"])[0]
    assert sample["audio_spec"].shape == (257, 188) and sample["video"].shape[1:] == (64, 64, 3)
    assert {len(s["video"]) for s in samples_of(splits["test"])} == {1, 2}  # 1 fps over 1-2 s clips


def test_shard_manifest_reports_skips_and_repairs(root, tmp_path):
    manifests = shard_corpus("crema_d", root, tmp_path / "shards", max_samples=40, progress=False)
    report = manifests["train"]["report"]
    assert report["raw"] == report["written"] + report["skipped"] == SPLIT_CLIPS["train"]
    assert report["skipped_by_reason"] == dict(sorted(Counter(BROKEN.values()).items()))
    assert report["repairs"] == {"clipped_audio": 1, "downmix": 1, "resample": 1}
    assert manifests["train"]["class_counts"]["NEU"] > 0 and "CREMA-D raw release" in \
        manifests["train"]["source"]["release"]
    batch = next(iter(mmdata.load(tmp_path / "shards", "valid", batch_size=4)))
    assert batch["video"].shape[0] == 4 and batch["video"].dtype == torch.uint8 and "video_mask" in batch


def test_mp4_clips_are_read_back_by_decord_and_the_loader(root, tmp_path):
    import io
    import tarfile

    import decord

    field = crema_d.features(root, video_format="mp4")["video"]
    assert field.codec == "mp4" and field.shape == (None, 64, 64, 3)
    shards = tmp_path / "shards"
    shard_corpus("crema_d", root, shards, reader={"video_format": "mp4"}, max_samples=40, progress=False)
    npy = {s["__key__"]: s["video"] for s in samples_of(list(crema_d.iter_samples(root, "valid")))}
    loader = mmdata.load(shards, "valid", fields=["video"], batch_size=len(npy), shuffle=False)
    batch = next(iter(loader))
    for i, key in enumerate(batch["__key__"]):  # lossy, but close to the decoded source frames
        frames = batch["video"][i, :len(npy[key])].numpy().astype(np.int16)
        assert np.abs(frames - npy[key]).mean() < 6
    with tarfile.open(sorted((shards / "valid").glob("*.tar"))[0]) as tar:  # a real .mp4 member any reader opens
        info = next(m for m in tar.getmembers() if m.name.endswith(".video.mp4"))
        clip = tar.extractfile(info).read()
    key = info.name[:-len(".video.mp4")]
    assert len(decord.VideoReader(io.BytesIO(clip))) == len(npy[key])


def _clip(out: Path, name: str, wave: np.ndarray | None = None, rate: int = 16000, subtype: str = "PCM_16") -> None:
    rng = np.random.default_rng(0)  # test data only; the library's randomness goes through make_rng
    style = {"pitch": 150.0, "loud": 1.0, "tone": 0.0, "dx": 0.0, "dy": 0.0, "size": 0.0}
    (out / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (out / "VideoFlash").mkdir(parents=True, exist_ok=True)
    wave = voice(rng, 1.2, 0, style, "XX") if wave is None else wave
    sf.write(str(out / "AudioWAV" / f"{name}.wav"), wave, rate, subtype=subtype)
    frames = np.full((12, 64, 64, 3), 120, np.uint8)
    write_flv(out / "VideoFlash" / f"{name}.flv", frames)


def test_more_bad_inputs(tmp_path):
    _clip(tmp_path, "1003_IEO_HAP_LO")
    _clip(tmp_path, "1003_IEO_HAP_MD", np.zeros(800, np.float32) + 0.1)  # 0.05 s
    _clip(tmp_path, "1003_IEO_HAP_HI", np.full(16000, np.nan, np.float32), subtype="FLOAT")
    _clip(tmp_path, "1003-IEO-SAD-LO")
    _clip(tmp_path, "1003_IEO_SAD_MD")
    (tmp_path / "AudioWAV/1003_IEO_SAD_MD.wav").write_text("version https://git-lfs.github.com/spec/v1\noid x\n")
    (tmp_path / "AudioWAV/1003_IEO_SAD_HI.wav").write_bytes(b"RIFF garbage")
    write_flv(tmp_path / "VideoFlash/1003_IEO_SAD_HI.flv", np.full((5, 64, 64, 3), 9, np.uint8))
    items = list(crema_d.iter_samples(tmp_path, "train"))
    reasons = {s.key.rsplit("/", 1)[1]: s.reason for s in items if isinstance(s, Skip)}
    assert reasons == {"1003_IEO_HAP_MD": "too_short", "1003_IEO_HAP_HI": "non_finite",
                       "1003-IEO-SAD-LO": "bad_name", "1003_IEO_SAD_MD": "lfs_pointer",
                       "1003_IEO_SAD_HI": "unreadable_audio"}
    assert len(items) == 6 and len(samples_of(items)) == 1


def test_ogmge_lists(root, tmp_path):
    train = [f"{a}_IEO_{e}_{lv},{e}" for a in (1001, 1003, 1005) for e in ("HAP", "SAD") for lv in ("LO", "HI")]
    train += ["1002_TIE_ANG_XX,DIS", "1099_TIE_ANG_XX,ANG"]  # a label that disagrees; a clip not in the release
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n", encoding="utf-8-sig")  # OGM-GE files carry a BOM
    (tmp_path / "test.csv").write_text("1001_IEO_NEU_XX,NEU\n1003_IEO_ANG_HI,ANG\n", encoding="utf-8-sig")
    options = {"split_by": "ogmge", "ogmge_lists": str(tmp_path)}
    got = {s: list(crema_d.iter_samples(root, s, **options)) for s in crema_d.SPLITS}
    assert [len(got[s]) for s in crema_d.SPLITS] == [12, 2, 2]  # rows 0 and 9 of train.csv are valid
    skips = {s.key: s.reason for items in got.values() for s in items if isinstance(s, Skip)}
    assert skips == {"crema_d/train/1002_TIE_ANG_XX": "label_mismatch",
                     "crema_d/train/1099_TIE_ANG_XX": "missing_media"}
    actors = {s: {int(x["meta_actor"]) for x in samples_of(items)} for s, items in got.items()}
    assert actors["train"] & actors["test"]  # OGM-GE's lists leak speakers; the default split does not
    assert "clips in no split" in crema_d.describe(root, **options)
    with pytest.raises(ConfigError, match="needs ogmge_lists"):
        list(crema_d.iter_samples(root, "train", split_by="ogmge"))


def test_audio_matches_ogmge_preprocessing(root):
    import librosa

    path = root / "AudioWAV/1001_IEO_ANG_HI.wav"
    samples, _ = librosa.load(str(path), sr=22050)  # OGM-GE: librosa.load(sr=22050), tile x3, cut to 3 s
    resamples = np.tile(samples, 3)[:22050 * 3]
    resamples[resamples > 1.0], resamples[resamples < -1.0] = 1.0, -1.0
    expected = np.log(np.abs(librosa.stft(resamples, n_fft=512, hop_length=353)) + 1e-7)
    (sample,) = [s for s in samples_of(list(crema_d.iter_samples(root, "test"))) if s["__key__"].endswith("ANG_HI")
                 and s["__key__"].split("/")[-1].startswith("1001")]
    assert expected.shape == sample["audio_spec"].shape == (257, 188)
    np.testing.assert_allclose(sample["audio_spec"], expected, atol=1e-3)


def test_option_shapes_and_errors(root):
    assert crema_d.features(root, audio_feature="logmel")["audio_spec"].shape == (64, 188)
    assert crema_d.features(root, sample_rate=16000)["audio_spec"].shape == (257, 136)
    strip = crema_d.features(root, video_format="jpg")["video"]
    assert strip.shape == (None, 64, 3) and strip.codec == "jpg"
    items = list(crema_d.iter_samples(root, "valid", video_format="jpg", fps=4.0, image_size=32,
                                      audio_feature="logmel"))
    sample = samples_of(items)[0]
    assert sample["video"].shape[1:] == (32, 3) and sample["video"].shape[0] % 32 == 0
    assert sample["video"].shape[0] // 32 >= 4 and sample["audio_spec"].shape == (64, 188)
    with pytest.raises(ConfigError, match="valid: npy, mp4, jpg"):
        crema_d.features(root, video_format="avi")
    with pytest.raises(ConfigError, match="image_size 16.*decord"):  # a width decord 0.6 misreads
        crema_d.features(root, video_format="mp4", image_size=16)
    with pytest.raises(ConfigError, match="unknown split_by"):
        crema_d.features(root, split_by="random")
    with pytest.raises(ConfigError, match="unknown reader option"):
        crema_d.CORPUS.check_options({"fsp": 2})
    with pytest.raises(ConfigError, match="'frame_size' is now 'image_size'"):  # renamed: no alias
        crema_d.features(root, frame_size=32)


def test_missing_folders_fail_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"AudioWAV.*VideoFlash"):
        crema_d.describe(tmp_path)


def test_signal_is_split_between_audio_and_video(splits):
    def feats(items: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = samples_of(items)
        spec = np.stack([s["audio_spec"].mean(axis=1) for s in rows])
        colour = np.stack([s["video"][:, 16:48, 16:48].reshape(-1, 3).mean(axis=0) for s in rows])
        return spec, colour, np.array([int(s["label"]) for s in rows])

    (a_tr, v_tr, y_tr), (a_te, v_te, y_te) = feats(splits["train"]), feats(splits["test"])

    def accuracy(x_tr: np.ndarray, x_te: np.ndarray) -> float:
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
        centroids = np.stack([x_tr[y_tr == c].mean(0) for c in range(6)])
        pred = np.argmin(((x_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        return float((pred == y_te).mean())

    audio, video = accuracy(a_tr, a_te), accuracy(v_tr, v_te)
    both = accuracy(np.concatenate([a_tr, 10 * v_tr], 1), np.concatenate([a_te, 10 * v_te], 1))
    assert audio < 0.6 and video < 0.45 and both > max(audio, video) + 0.2


def test_video_encoder_frames_and_filmstrip():
    frames, strip = Field("uint8", (None, 16, 16, 3), "npy"), Field("uint8", (None, 16, 3), "jpg")
    assert encoder_kind("video", frames) == encoder_kind("video", strip) == "video"
    with pytest.raises(ValueError, match="no encoder"):
        encoder_kind("video", Field("uint8", (None, 16, 3), "npy"))  # a 3-d npy video is not a filmstrip
    torch.manual_seed(0)
    enc = build_encoder("video", frames, 8)
    other = build_encoder("video", strip, 8)
    other.load_state_dict(enc.state_dict())
    enc.eval(), other.eval()
    x = torch.rand(3, 4, 16, 16, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = enc(x, mask)
    assert isinstance(enc, VideoEncoder) and out.shape == (3, 8)
    torch.testing.assert_close(out, other(x.reshape(3, 64, 16, 3), mask.repeat_interleave(16, dim=1)))
    x2 = x.clone()
    x2[~mask] = 7.0  # padded frames never matter
    torch.testing.assert_close(out, enc(x2, mask))
    torch.testing.assert_close(enc(x[1:2, :2]), out[1:2])


def test_late_fusion_trains_on_a_crema_d_batch(root, splits):
    features = crema_d.features(root)
    rows = samples_of(splits["valid"])[:6]
    batch = collate(rows, features, ["audio_spec", "video", "label"])
    model = late_fusion.build_model(features, fields=["audio_spec", "video"], dim=8, hidden=16)
    out = late_fusion.training_step(model, batch)
    out["loss"].backward()
    assert out["pred"].shape == (6,) and torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in model.encoders["video"].parameters() if p.requires_grad)


def test_generate_is_deterministic_and_checks_sizes(tmp_path):
    a = generate(tmp_path / "a", seed=3, actors=2, sentences=1, broken=False)
    b = generate(tmp_path / "b", seed=3, actors=2, sentences=1, broken=False)
    names = sorted(p.relative_to(a) for p in a.rglob("*.*"))
    assert len(names) == 2 * 2 * 16
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    with pytest.raises(ValueError, match="actors >= 9"):
        generate(tmp_path / "c", actors=3)
