"""6.3 Text: the shared intake (mmdata.modalities.text decode_text/clean_text) of captions, plots and hypotheses."""
from __future__ import annotations

import unicodedata

import pytest

from mmdata.errors import SampleError
from mmdata.corpora.affect.rows import transcript
from mmdata.modalities.text import MAX_TEXT_BYTES, clean_text, decode_text


def test_txt_02_bom_is_stripped_and_nul_is_refused():
    """TXT-02 (partly): a UTF-8 BOM is dropped; text with NUL bytes is a ``control_char`` skip, not stored."""
    assert decode_text("\ufeffcaption".encode(), "x") == "caption"
    with pytest.raises(SampleError) as err:
        clean_text("a\x00b", "caption of k1")
    assert err.value.reason == "control_char" and "caption of k1" in str(err.value)


def test_txt_02_line_ends_are_normalised():
    """TXT-02: CRLF and CR become LF, recorded as repair ``crlf_to_lf`` (outer whitespace is stripped first, so
    a trailing CRLF alone is no repair); MOSI/MOSEI transcripts follow the same rule."""
    repairs: list[str] = []
    assert clean_text("line one\r\nline two\rthree", "x", repairs) == "line one\nline two\nthree"
    assert repairs == ["crlf_to_lf"]
    repairs.clear()
    assert clean_text("one line\r\n", "x", repairs) == "one line" and repairs == []
    assert transcript(b"so\r\nwell", repairs) == "so\nwell" and repairs == ["crlf_to_lf"]


def test_txt_02_a_reader_counts_the_line_end_repair(tmp_path):
    """TXT-02: a Hateful Memes caption with CRLF inside is stored with LF and its sample carries the repair,
    which the writer counts in the report."""
    import json

    from mmdata.corpora import hateful_memes
    from mmdata.corpora.base import REPAIRS
    from mmdata.synth.hateful_memes import generate
    from tests.faults._helpers import split_items

    root = generate(tmp_path / "hm", seed=0, train=6, valid=3, test=3, unseen=3)
    lines = (root / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["text"] = "first line\r\nsecond line"
    (root / "train.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    samples, skips = split_items(list(hateful_memes.iter_samples(root, "train", image_size=None)))
    sample = next(s for s in samples if s["__key__"].endswith(f"/{record['id']}"))
    assert not skips and sample["text"] == "first line\nsecond line" and "crlf_to_lf" in sample[REPAIRS]
    assert sum("crlf_to_lf" in s[REPAIRS] for s in samples) == 1


def test_txt_04_nfd_and_nfc_spellings_become_the_same_text():
    """TXT-04: 'é' as one code point or as 'e' + combining accent is one string after intake (NFC), so
    tokenisers and duplicate checks see the same words."""
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    assert nfc != nfd and clean_text(nfd, "x") == clean_text(nfc, "x") == nfc


def test_txt_01_non_utf8_names_the_byte_offset_never_replaces():
    """TXT-01: Latin-1 bytes are an ``encoding`` skip naming the first bad byte, never U+FFFD replacement."""
    with pytest.raises(SampleError) as err:
        decode_text(b"a caf\xe9 au lait", "plot of tt001")
    assert err.value.reason == "encoding" and "byte 5" in str(err.value) and "tt001" in str(err.value)


def test_txt_05_megabyte_text_is_refused_or_truncated_by_a_documented_rule():
    """TXT-05: above MAX_TEXT_BYTES (1 MiB of UTF-8) a text is a ``too_long`` skip; below, it is kept whole (the
    reference loaders' tokenizers cut at their own max length)."""
    huge = "word " * 2_000_000
    try:
        text = clean_text(huge, "x")
    except SampleError as err:
        assert err.reason == "too_long"
    else:
        assert len(text) < len(huge.strip())
    assert clean_text("é" * (MAX_TEXT_BYTES // 2), "x") == "é" * (MAX_TEXT_BYTES // 2)  # 1 MiB exactly: kept
    with pytest.raises(SampleError) as err:
        transcript("é" * (MAX_TEXT_BYTES // 2 + 1))  # 2 bytes each: one character over
    assert err.value.reason == "too_long"
