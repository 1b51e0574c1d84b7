"""``mmdata`` command line: synth, shard, inspect, verify, preview.

Expected failures (every :class:`mmdata.errors.MmdataError`, OS errors such as a missing file, an interrupt) print
one line naming the file and the fix and exit non-zero; the traceback shows only with ``--debug`` (or
``MMDATA_DEBUG=1``, which also covers the DVC stages in ``pipelines/``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

# run_guarded lives on the ground floor so the DVC stages can use it without importing this module, whose
# commands import most of the library (every stage would then depend on all of it; tests/test_dvc_graph.py).
from mmdata.errors import run_guarded


def _cmd_synth(args: argparse.Namespace) -> int:
    from mmdata.errors import ConfigError
    from mmdata.synth import SYNTHS, write_synth

    if args.corpus not in SYNTHS:
        raise ConfigError(f"unknown corpus {args.corpus!r}; known: {', '.join(sorted(SYNTHS))}")
    root = write_synth(args.corpus, Path(args.out), seed=args.seed)
    print(f"wrote synthetic {args.corpus} to {root}")
    return 0


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    from mmdata.errors import ConfigError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def _cmd_shard(args: argparse.Namespace) -> int:
    from mmdata.shards.build import shard_corpus

    manifests = shard_corpus(args.corpus, args.root, args.out, reader=_parse_options(args.option),
                             max_samples=args.max_samples, max_bytes=args.max_bytes,
                             max_skip_fraction=args.max_skip_fraction, progress=True, wait=args.wait,
                             processes=args.processes)
    for split, manifest in manifests.items():
        report = manifest["report"]
        print(f"{args.corpus}/{split}: raw {report['raw']} = written {report['written']} + skipped "
              f"{report['skipped']} {report['skipped_by_reason']}; {len(manifest['shards'])} shards")
    return 0


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"corpus": manifest["corpus"], "split": manifest["split"], "samples": manifest["samples"],
            "rows": manifest["rows"], "view": manifest["view"],
            "shards": len(manifest["shards"]), "bytes": sum(s["bytes"] for s in manifest["shards"]),
            "fields": {n: f"{f['dtype']}{tuple(f['shape'])} .{f['codec']}" for n, f in manifest["features"].items()},
            "labels": manifest.get("class_counts") or manifest.get("label_summary"),
            "source": manifest["source"].get("release"),
            "report": {k: v for k, v in manifest["report"].items() if k != "skips"}}


def _cmd_inspect(args: argparse.Namespace) -> int:
    from mmdata.shards.manifest import read_manifest
    from mmdata.shards.verify import split_dirs

    summaries = [_summary(read_manifest(d)) for d in split_dirs(Path(args.dir))]
    if args.json:
        print(json.dumps(summaries, indent=1))
        return 0
    for s in summaries:
        print(f"{s['corpus']}/{s['split']}: {s['samples']} samples in {s['shards']} shards, {s['bytes']} bytes")
        print(f"  source: {s['source']}")
        for name, desc in s["fields"].items():
            print(f"  {name}: {desc}")
        print(f"  labels: {s['labels']}")
        print(f"  report: {s['report']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from mmdata.shards.verify import verify

    bad = 0
    for split, problems in verify(args.dir, source=args.source).items():
        for problem in problems:
            print(f"FAIL {split}: {problem}")
        bad += len(problems)
        if not problems:
            print(f"ok {split}")
    return 1 if bad else 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from mmdata.preview import contact_sheet

    path = contact_sheet(Path(args.dir), Path(args.out), split=args.split, count=args.count)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mmdata`` command."""
    parser = argparse.ArgumentParser(prog="mmdata", description="multimodal corpora -> checked WebDataset shards")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # Also accepted after the subcommand; SUPPRESS keeps a subparser from overwriting the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", parents=[common], help="write a synthetic mini corpus in its real layout")
    p.add_argument("corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_synth)
    p = sub.add_parser("shard", parents=[common], help="read a raw corpus and write checked shards")
    p.add_argument("corpus")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="reader option")
    p.add_argument("--max-samples", type=int, default=1000)
    p.add_argument("--max-bytes", type=int, default=256 << 20)
    p.add_argument("--max-skip-fraction", type=float, default=0.05)
    p.add_argument("--wait", action="store_true", help="wait for another run writing the same --out to finish")
    p.add_argument("--processes", type=int, default=1,
                   help="processes writing shards (the output bytes are the same for any number)")
    p.set_defaults(run=_cmd_shard)
    p = sub.add_parser("inspect", parents=[common], help="summarise the manifests of a shard directory")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_inspect)
    p = sub.add_parser("verify", parents=[common],
                       help="re-hash shards and reconcile counts; non-zero exit on any mismatch")
    p.add_argument("dir")
    p.add_argument("--source", metavar="ROOT", default=None,
                   help="raw corpus root: also check raw == written + skipped per split against it (no media decoded)")
    p.set_defaults(run=_cmd_verify)
    p = sub.add_parser("preview", parents=[common], help="contact sheet of samples as a PNG")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=8)
    p.set_defaults(run=_cmd_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmdata`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_guarded(f"mmdata {args.command}", lambda: args.run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
