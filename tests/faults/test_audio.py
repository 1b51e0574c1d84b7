"""6.4 Audio (CREMA-D's WAV files, the only raw audio among the corpora): decoding rules of
mmdata.modalities.audio."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mmdata.modalities.audio import AudioRules, load
from mmdata.errors import SampleError
from tests.faults._helpers import tone

RULES = AudioRules(sample_rate=16000, expected_rate=16000)


@pytest.mark.parametrize("subtype, tolerance", [("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-6),
                                                ("FLOAT", 0.0), ("PCM_U8", 1e-2)])
def test_aud_04_every_sample_format_becomes_the_same_float32_wave(tmp_path, subtype, tolerance):
    """AUD-04: 16/24/32-bit, float and unsigned 8-bit files all decode to float32 in [-1, 1] at one scale
    (an 8-bit file is not 128x louder, a float file not 32768x quieter)."""
    wave = tone()
    sf.write(str(tmp_path / "a.wav"), wave, 16000, subtype=subtype)
    got, repairs = load(tmp_path / "a.wav", RULES)
    assert got.dtype == np.float32 and got.shape == wave.shape and repairs == []
    assert np.abs(got - wave).max() <= tolerance + 1e-7


def test_aud_04_stereo_is_downmixed_and_recorded(tmp_path):
    """AUD-04: two channels become their mean, with repair ``downmix``."""
    wave = tone()
    sf.write(str(tmp_path / "s.wav"), np.stack([wave, 0.5 * wave], axis=1), 16000, subtype="FLOAT")
    got, repairs = load(tmp_path / "s.wav", RULES)
    np.testing.assert_allclose(got, 0.75 * wave, atol=1e-6)
    assert repairs == ["downmix"]


def test_aud_07_random_bytes_named_wav_are_unreadable_audio_naming_our_file(tmp_path):
    """AUD-07: libsndfile names only its buffer; the skip names the file."""
    path = tmp_path / "1001_DFA_ANG_XX.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SampleError) as err:
        load(path, RULES)
    assert err.value.reason == "unreadable_audio" and path.name in str(err.value)


def test_aud_02_truncated_data_chunk_is_truncated_audio(tmp_path):
    """AUD-02: the RIFF header promises 16000 frames, the file holds half; decoders return the half silently."""
    sf.write(str(tmp_path / "a.wav"), tone(), 16000, subtype="PCM_16")
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "a.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError) as err:
        load(tmp_path / "a.wav", RULES)
    assert err.value.reason == "truncated_audio"
