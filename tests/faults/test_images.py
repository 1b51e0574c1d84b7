"""6.2 Images: what the vision-language readers' intake (mmdata.modalities.image, used by MM-IMDB, Hateful Memes and
SNLI-VE) does with bombs, huge and tiny images, unusual modes, EXIF and silent corruption."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdata.corpora import hateful_memes
from mmdata.errors import SampleError
from mmdata.modalities.image import MAX_PIXELS, load_image
from mmdata.shards.build import fingerprint
from mmdata.shards.codec import decode
from mmdata.synth.hateful_memes import generate
from mmdata.types import Field
from tests.faults._helpers import split_items

SIZES = {"train": 12, "valid": 4, "test": 4, "unseen": 4}


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _rgb(height: int = 20, width: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def memes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("hm") / "hm", seed=0, **SIZES)


def _never_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decode fail the test: the size check must come from the header alone."""
    import cv2

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def test_img_05_decompression_bomb_is_too_large_from_the_header_in_a_reader(memes, tmp_path, monkeypatch):
    """IMG-05: a 20000 x 20000 1-bit PNG (48 KB on disk) in the raw set is skipped as ``too_large`` naming its
    key and file, without decoding a pixel; the other memes are read."""
    import shutil

    root = shutil.copytree(memes, tmp_path / "hm")
    record = json.loads((root / "train.jsonl").read_text().splitlines()[0])
    (root / record["img"]).write_bytes(_encode(Image.new("1", (20000, 20000)), "PNG"))
    _never_decode(monkeypatch)  # the bomb must not reach a decoder (nor may the other, resized, images)
    samples, skips = split_items(list(hateful_memes.iter_samples(root, "train", image_size=None)))
    assert [(s.reason, s.key.rsplit("/", 1)[1]) for s in skips] == [("too_large", f"{record['id']}")]
    assert skips[0].source.endswith("train.jsonl:1") and len(samples) == SIZES["train"] - 1  # the listing line


def test_img_06_a_huge_legitimate_image_is_refused_before_decoding(monkeypatch):
    """IMG-06: above MAX_PIXELS (here 9000 x 6000 = 54 MP) the policy is skip ``too_large``, from the header,
    so peak memory never holds the decoded image."""
    data = _encode(Image.new("L", (9000, 6000)), "PNG")
    assert 9000 * 6000 > MAX_PIXELS
    _never_decode(monkeypatch)
    with pytest.raises(SampleError) as err:
        load_image(data, "jpg", (64, 64))
    assert err.value.reason == "too_large" and "9000x6000" in str(err.value)


def test_img_07_a_one_pixel_image_is_resized_or_kept_never_a_crash():
    """IMG-07: a 1x1 image becomes the configured size (documented resize) or stays source bytes that decode."""
    tiny = _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    array, repairs = load_image(tiny, "jpg", (64, 64))
    assert array.shape == (64, 64, 3) and repairs == () and tuple(array[0, 0]) == (200, 10, 10)
    kept, _ = load_image(tiny, "png", None)
    assert kept == tiny and decode(kept, Field("uint8", (None, None, 3), "png")).shape == (1, 1, 3)


@pytest.mark.parametrize("mode, fmt, repair", [
    ("CMYK", "JPEG", "image_cmyk_to_rgb"), ("L", "PNG", "image_l_to_rgb"), ("RGBA", "PNG", "image_rgba_to_rgb"),
    ("P", "PNG", "image_p_to_rgb"), ("I;16", "PNG", "image_i;16_to_rgb"),
])
def test_img_08_unusual_modes_become_rgb8_and_the_repair_is_recorded(mode, fmt, repair):
    """IMG-08: CMYK, grey, alpha, palette and 16-bit images are converted to RGB uint8, never kept silently."""
    source = _rgb()
    image = Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 256) if mode == "I;16" else \
        source.convert(mode)
    for codec, size in (("png", None), ("jpg", (16, 16))):
        array, repairs = load_image(_encode(image, fmt), codec, size)
        assert array.dtype == np.uint8 and array.shape == (*(size or (20, 30)), 3)
        assert repair in repairs


def test_img_08_animated_gif_keeps_its_first_frame_and_says_so():
    """IMG-08: an animated GIF named as a PNG field is decoded to its first frame, recorded as a format repair."""
    first, second = _rgb(seed=1).convert("P"), Image.new("RGB", (30, 20)).convert("P")
    data = _encode(first, "GIF", save_all=True, append_images=[second])
    array, repairs = load_image(data, "png", None)
    np.testing.assert_array_equal(array, np.asarray(first.convert("RGB")))
    assert "image_gif_as_png" in repairs


def test_img_09_exif_orientation_is_deterministic_and_corrupt_exif_does_not_crash():
    """IMG-09: the EXIF orientation tag is never applied, by any decode (so every run and every worker sees the
    same pixel grid, as MMF's and torchvision's PIL loaders do), and an image carrying one is counted as repair
    ``exif_orientation_ignored``; a corrupt EXIF block does not stop the image from being read."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = _encode(_rgb(), "JPEG", exif=exif.tobytes())
    kept, repairs = load_image(rotated, "jpg", None)
    field = Field("uint8", (None, None, 3), "jpg")
    assert kept == rotated and decode(kept, field).shape == (20, 30, 3)  # stored as is, read unrotated
    assert repairs == ("exif_orientation_ignored",)
    resized, repairs = load_image(rotated, "jpg", (10, 15))  # resized as stored, not as displayed
    np.testing.assert_array_equal(resized, load_image(_encode(_rgb(), "JPEG"), "jpg", (10, 15))[0])
    assert repairs == ("exif_orientation_ignored",)
    exif[0x0112] = 1  # "as stored": nothing to record
    assert load_image(_encode(_rgb(), "JPEG", exif=exif.tobytes()), "jpg", None)[1] == ()
    plain = _encode(_rgb(), "JPEG")
    corrupt = plain[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff" + plain[2:]  # IFD offset past end
    value, repairs = load_image(corrupt, "jpg", None)  # Pillow warns at open; the image is read all the same
    assert decode(value, field).shape == (20, 30, 3) and repairs == ()


def test_img_02_a_flipped_byte_that_still_decodes_changes_the_recorded_raw_sha256(tmp_path):
    """IMG-02: decoding cannot see a flipped byte in JPEG entropy data, so the shard manifest records every raw
    file's sha256 (``source.files``): the same flip is caught by comparing fingerprints."""
    from mmdata.corpora import mmimdb
    from mmdata.synth.mmimdb import generate as generate_mmimdb

    root = generate_mmimdb(tmp_path / "raw", seed=0, train=6, valid=2, test=2)
    before = {f["path"]: f["sha256"] for f in fingerprint(mmimdb.CORPUS, root, {})["files"]}
    poster = next(p for p in before if p.endswith(".jpeg"))
    path = root / poster
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x01  # inside the entropy-coded scan
    path.write_bytes(bytes(data))
    assert decode(bytes(data), Field("uint8", (None, None, 3), "jpg")).ndim == 3  # still decodes
    after = {f["path"]: f["sha256"] for f in fingerprint(mmimdb.CORPUS, root, {})["files"]}
    assert [p for p in before if before[p] != after[p]] == [poster]
