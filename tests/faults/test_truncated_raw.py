"""A raw file cut in half, in every corpus: one named error or counted skips naming it, never a traceback.

Fault rows IMG-01 and PCD-05 (truncated media and arrays) across the ten corpora: the largest file each reader
actually reads (``Corpus.sources``) is truncated to half its size, then ``mmdata shard`` runs as a user would.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mmdata.cli import main
from mmdata.corpora import CORPORA
from mmdata.shards.manifest import read_manifest
from mmdata.shards.verify import verify
from mmdata.synth import SYNTHS
from tests.test_verify import MINIS, SKIP_BUDGET


def _truncate_largest_source(name: str, root: Path) -> Path:
    sources = sorted(CORPORA[name].sources(root, **MINIS[name][1]), key=lambda p: (-p.stat().st_size, str(p)))
    path = sources[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 + 7])  # +7: not on a tidy boundary
    return path


@pytest.mark.parametrize("name", sorted(MINIS))
def test_a_truncated_raw_file_is_a_named_error_or_a_counted_skip(capsys, tmp_path, name):
    root = Path(SYNTHS[name](tmp_path / "raw" / name, seed=0, **MINIS[name][0]))
    cut = _truncate_largest_source(name, root)
    out = tmp_path / "out" / name
    argv = ["shard", name, "--root", str(root), "--out", str(out), "--max-skip-fraction", str(SKIP_BUDGET)]
    argv += [arg for key, value in MINIS[name][1].items() for arg in ("--option", f"{key}={value}")]
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status != 0:  # one line naming the corpus and the file (or the reader option the short data violates)
        assert status == 2 and len(err.strip().splitlines()) == 1 and "error:" in err
        assert cut.name in err or name in err
        assert not out.exists()
        return
    skips = [s for split in CORPORA[name].splits for s in read_manifest(out / split)["report"]["skips"]]
    assert any(cut.name in s["source"] or cut.stem in s["key"] or cut.name in s["detail"] for s in skips), \
        f"{cut} was cut in half, yet no skip names it: {skips}"
    assert not any(verify(out, source=root).values())  # and raw = written + skipped against the source
