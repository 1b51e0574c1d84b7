"""Raw text intake: strict UTF-8 captions, plots, hypotheses and transcripts, and the JSON / JSONL files they
come in (MM-IMDB, Hateful Memes, SNLI-VE; MOSI / MOSEI transcripts through :func:`bounded_text`).

Text (reliability.md 6.3): bytes are decoded as strict UTF-8 (``encoding`` names the byte offset, never a
silent replacement), a BOM is stripped, text is NFC-normalised, NUL bytes and empty text are refused, CRLF / CR
line ends become LF (repair ``crlf_to_lf``), and text above :data:`MAX_TEXT_BYTES` is refused (``too_long``).
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.errors import ConfigError, SampleError
from mmdata.modalities.image import read_file  # raw bytes with the missing / empty-file rules

#: Longest text kept, in UTF-8 bytes; longer is ``too_long``. MM-IMDb's longest plots are a few kB, captions and
#: hypotheses one line, and the reference loaders' tokenizers keep 512 tokens or fewer, so below this the whole
#: text is stored (the loader truncates as it always did) and a text above it is not a caption or a plot.
MAX_TEXT_BYTES = 1 << 20
#: Repair code of a text whose CRLF / CR line ends were normalised to LF.
LINE_END_REPAIR = "crlf_to_lf"


def decode_text(data: bytes, what: str) -> str:
    """Strict UTF-8 (a leading BOM dropped); SampleError ``encoding`` naming the first bad byte offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SampleError("encoding", f"{what}: not UTF-8 at byte {exc.start} ({data[exc.start:exc.start + 4]!r})") \
            from None


def bounded_text(text: str, what: str, repairs: list[str] | None = None) -> str:
    """``text`` with CRLF / CR line ends as LF; SampleError ``too_long`` above :data:`MAX_TEXT_BYTES` of UTF-8.

    Args:
        text: a decoded text.
        what: names the text in the error.
        repairs: when given, :data:`LINE_END_REPAIR` is appended to it if a line end was changed.
    """
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise SampleError("too_long", f"{what}: more than {MAX_TEXT_BYTES} bytes of UTF-8 text")
    if "\r" in text:
        # Windows (CRLF) and old Mac (CR) line ends: the same lines, but other bytes and other tokens.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if repairs is not None:
            repairs.append(LINE_END_REPAIR)
    return text


def clean_text(value: Any, what: str, repairs: list[str] | None = None) -> str:
    """A text field value: a str, NFC-normalised, with no NUL, LF line ends, not blank and not too long.

    Args:
        value: the value read from the release.
        what: names the text in errors.
        repairs: when given, the repairs applied are appended to it (:data:`LINE_END_REPAIR`).

    Raises:
        SampleError: ``schema`` (not a str), ``control_char`` (NUL), ``empty_text`` or ``too_long``.
    """
    if not isinstance(value, str):
        raise SampleError("schema", f"{what}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise SampleError("control_char", f"{what}: contains NUL bytes")
    # NFC so that the same words in NFD (macOS file exports) are the same tokens and the same duplicates.
    # Line ends after strip(): a trailing CRLF is dropped with the other outer whitespace, not a repair.
    text = bounded_text(unicodedata.normalize("NFC", value).strip(), what, repairs)
    if not text:
        raise SampleError("empty_text", f"{what}: empty text")
    return text


def read_json(path: Path) -> Any:
    """A JSON file, strictly UTF-8; SampleError ``missing_json``, ``empty_file``, ``encoding`` or ``bad_json``."""
    text = decode_text(read_file(path, "json"), str(path))
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SampleError("bad_json", f"{path}: {exc}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object or SampleError)`` for every non-blank line of a JSONL file (1-based).

    A bad line never stops the file: it comes back as a SampleError (``encoding`` or ``bad_json``).

    Raises:
        ConfigError: the file is missing.
    """
    if not path.is_file():
        raise ConfigError(f"missing {path}")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # a trailing newline or blank line is formatting, not an item
            try:
                yield number, json.loads(decode_text(raw, f"{path.name} line {number}"))
            except SampleError as err:
                yield number, err
            except ValueError as exc:
                yield number, SampleError("bad_json", f"{path.name} line {number}: {exc}")
