"""6.3 Text: the shared intake (mmdata.media decode_text/clean_text) of captions, plots and hypotheses."""
from __future__ import annotations

import unicodedata

import pytest

from mmdata.errors import SampleError
from mmdata.media import clean_text, decode_text


def test_txt_02_bom_is_stripped_and_nul_is_refused():
    """TXT-02 (partly): a UTF-8 BOM is dropped; text with NUL bytes is a ``control_char`` skip, not stored."""
    assert decode_text("\ufeffcaption".encode(), "x") == "caption"
    with pytest.raises(SampleError) as err:
        clean_text("a\x00b", "caption of k1")
    assert err.value.reason == "control_char" and "caption of k1" in str(err.value)


@pytest.mark.xfail(strict=True, reason="TXT-02 gap: CRLF / CR line ends are kept as they are, not normalised")
def test_txt_02_line_ends_are_normalised():
    assert clean_text("line one\r\nline two\rthree", "x") == "line one\nline two\nthree"


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


@pytest.mark.xfail(strict=True, reason="TXT-05 gap: no length limit; a 10 MB caption is stored whole")
def test_txt_05_megabyte_text_is_refused_or_truncated_by_a_documented_rule():
    huge = "word " * 2_000_000
    try:
        text = clean_text(huge, "x")
    except SampleError as err:
        assert err.reason == "too_long"
    else:
        assert len(text) < len(huge.strip())
