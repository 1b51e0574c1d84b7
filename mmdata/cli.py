"""``mmdata`` command line: synth, shard, inspect, verify, preview, diff.

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
                             processes=args.processes, engine=args.engine, address=args.address)
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


def _pair(p: dict[str, Any]) -> str:
    return f"{p['old']} -> {p['new']}"


def _keys_text(title: str, keys: list[str], limit: int, notes: dict[str, list[str]] | None = None) -> list[str]:
    """``title (n):`` then at most ``limit`` keys (with the changed fields where known)."""
    lines = [f"{title} ({len(keys)}):"] if keys else []
    for key in keys[:limit]:
        lines.append(f"  {key}" + (f"  ({', '.join(notes[key])})" if notes and key in notes else ""))
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more (--limit)")
    return lines


def _diff_counts(result: dict[str, Any]) -> list[str]:
    """The count lines of a diff report: per split, then classes, schema, params, source and skips."""
    lines = [f"samples: +{len(result['added'])} added, -{len(result['removed'])} removed, "
             f"~{len(result['changed'])} changed" + (" (payload bytes compared)" if result["exact"] else "")]
    for split, s in result["splits"].items():
        where = "" if all(s["present"].values()) else " (only in " + ("OLD)" if s["present"]["old"] else "NEW)")
        lines.append(f"  {split}{where}: samples {_pair(s['samples'])}, rows {_pair(s['rows'])}, shards "
                     f"{_pair(s['shards'])}; +{s['added']} -{s['removed']} ~{s['changed']}")
    for part in ("classes", "schema", "params"):
        lines += [f"{part} {split}: {path}: {_pair(p)}" for split, paths in result[part].items()
                  for path, p in paths.items()]
    src = result["source"]
    if src["differ"]:
        lines += [f"source: {path}: {_pair(p)}" for path, p in src["release"].items()]
        lines.append(f"source: raw files {_pair(src['files'])}, +{len(src['files_added'])} "
                     f"-{len(src['files_removed'])}, sha256 changed {len(src['sha256_changed'])}")
    for split, sk in result["skips"].items():
        reasons = ", ".join(f"{r} {_pair(p)}" for r, p in sk["skipped_by_reason"].items()) or "none"
        lines.append(f"skips {split}: skipped {_pair(sk['counts']['skipped'])} (raw {_pair(sk['counts']['raw'])}); "
                     f"by reason: {reasons}; skipped keys +{len(sk['keys_added'])} -{len(sk['keys_removed'])}")
    return lines


def diff_text(result: dict[str, Any], old: str, new: str, limit: int) -> str:
    """The readable report of :func:`mmdata.shards.diff.diff`: counts first, then up to ``limit`` keys per list."""
    lines = [f"mmdata diff {old} {new}: " + ("identical" if result["identical"] else "differ")]
    lines += _diff_counts(result)
    notes = {k: v for s in result["splits"].values() for k, v in s["changed_fields"].items()}
    lines += _keys_text("added", result["added"], limit) + _keys_text("removed", result["removed"], limit)
    lines += _keys_text("changed", result["changed"], limit, notes)
    src = result["source"]
    for name in ("files_added", "files_removed", "sha256_changed"):
        lines += _keys_text(f"source {name.replace('_', ' ')}", src[name], limit)
    for split, sk in result["skips"].items():
        lines += _keys_text(f"skipped keys added in {split}", sk["keys_added"], limit)
        lines += _keys_text(f"skipped keys removed in {split}", sk["keys_removed"], limit)
    return "\n".join(lines)


def _diff_result(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """The comparison and the names of its two sides: two folders, or one DVC-tracked folder at git revisions."""
    from mmdata.errors import ConfigError

    if not args.rev:
        if args.new is None:
            raise ConfigError("mmdata diff needs OLD and NEW folders, or one folder and --rev REV [--rev REV]")
        from mmdata.shards.diff import diff
        return diff(args.old, args.new, exact=args.exact), args.old, args.new
    if args.new is not None:
        raise ConfigError(f"mmdata diff PATH --rev OLD [--rev NEW] compares one folder at git revisions; drop the "
                          f"second folder {args.new!r} (or drop --rev to compare two folders)")
    if len(args.rev) > 2:
        raise ConfigError(f"mmdata diff takes at most two --rev (OLD, then NEW), got {len(args.rev)}: {args.rev}")
    from mmdata.shards.revision import diff_revisions

    new_rev = args.rev[1] if len(args.rev) == 2 else None
    result = diff_revisions(args.old, args.rev[0], new_rev, repo=args.repo, exact=args.exact)
    path = result["revisions"]["path"]
    return result, f"{path}@{args.rev[0]}", f"{path}@{new_rev or 'workspace'}"


def _cmd_diff(args: argparse.Namespace) -> int:
    result, old, new = _diff_result(args)
    print(json.dumps(result, indent=1) if args.json else diff_text(result, old, new, args.limit))
    return 0 if result["identical"] else 1


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
    p.add_argument("--processes", type=int, default=None,
                   help="processes writing shards (default 1; with --engine ray and no --address: the CPUs of the "
                        "local Ray instance, default all); the output bytes are the same for any number")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="write on this machine's processes, or on Ray tasks (pip install 'mmdata[ray]'); "
                        "the output bytes are the same")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the Ray cluster to connect to (ray.init address); the output must "
                        "be on storage its workers share")
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
    p = sub.add_parser("diff", parents=[common],
                       help="what changed between two shard outputs, or one output at two git revisions "
                            "(through DVC); exit 0 identical, 1 differ, 2 error")
    p.add_argument("old", help="the OLD corpus shard folder or split folder; with --rev, the DVC-tracked folder "
                               "(or corpus name: data/shards/<name>)")
    p.add_argument("new", nargs="?", default=None, help="the NEW corpus shard folder or split folder (not with --rev)")
    p.add_argument("--rev", action="append", default=[], metavar="REV",
                   help="git revision of OLD; a second --rev is NEW's (default: the workspace). Read through DVC "
                        "(cache or remote), the workspace untouched")
    p.add_argument("--repo", default=None, help="a folder in the git + DVC repository for --rev (default: .)")
    p.add_argument("--json", action="store_true", help="the whole comparison as JSON (for scripts)")
    p.add_argument("--limit", type=int, default=20, help="keys shown per list in the text report")
    p.add_argument("--exact", action="store_true",
                   help="also compare payload bytes where (size, crc32) agree (crc32 alone misses ~2^-32)")
    p.set_defaults(run=_cmd_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmdata`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_guarded(f"mmdata {args.command}", lambda: args.run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
