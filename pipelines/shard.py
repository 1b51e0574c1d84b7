"""Stage ``shard@<corpus>``: read the raw corpus at corpora.<corpus>.root and write data/shards/<corpus>."""
from __future__ import annotations

import argparse

from mmdata.errors import run_guarded
from mmdata.corpora import CORPORA
from mmdata.shards.build import shard_corpus
from pipelines.params import check_keys, corpus_params, keyword_options, load_params, shards_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", choices=sorted(CORPORA))
    args = parser.parse_args(argv)
    block = corpus_params(load_params(), args.corpus)
    shard = block.get("shard", {})
    check_keys(shard, keyword_options(shard_corpus) - {"reader", "progress", "wait"}, f"corpora.{args.corpus}.shard")
    manifests = shard_corpus(args.corpus, block["root"], shards_dir(args.corpus), reader=block.get("reader", {}),
                             **shard)
    for split, manifest in manifests.items():
        report = manifest["report"]
        print(f"shard: {args.corpus}/{split}: raw {report['raw']} = written {report['written']} + skipped "
              f"{report['skipped']} {report['skipped_by_reason']}; {len(manifest['shards'])} shards")


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.shard", main))
