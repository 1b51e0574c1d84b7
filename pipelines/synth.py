"""Stage ``synth@<corpus>``: write the synthetic mini corpus in its real layout under data/raw/<corpus>."""
from __future__ import annotations

import argparse
from pathlib import Path

from mmdata.errors import run_guarded
from mmdata.synth import SYNTHS, write_synth
from pipelines.params import check_keys, corpus_params, keyword_options, load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", choices=sorted(SYNTHS))
    args = parser.parse_args(argv)
    block = corpus_params(load_params(), args.corpus).get("synth", {})
    generate = SYNTHS[args.corpus]
    check_keys(block, keyword_options(generate), f"corpora.{args.corpus}.synth")
    out = Path("data/raw") / args.corpus
    write_synth(args.corpus, out, **block)  # DVC removes the stage's outs first; a manual re-run must do so
    print(f"synth: wrote {out}")


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.synth", main))
