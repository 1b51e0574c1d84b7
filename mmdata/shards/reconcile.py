"""The ledger as checked invariants: ``raw = written + skipped``, and raw equal to what the source holds.

Both raise :class:`~mmdata.errors.LedgerError` with a message naming the split, the counts and a reason code,
never an ``assert`` (which ``python -O`` strips). The writer calls them before publishing a split; ``mmdata
verify`` calls them on a finished output (``--source`` for the second one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdata.corpora.base import RawCount
from mmdata.errors import LedgerError


def check_ledger(report: dict[str, Any], where: str) -> None:
    """Raise LedgerError unless the report balances: raw == written + skipped (ignored files are outside).

    Args:
        report: a manifest's ``report`` (``raw``, ``written``, ``skipped``).
        where: ``<corpus>/<split>`` or the split folder, for the message.
    """
    raw, written, skipped = report["raw"], report["written"], report["skipped"]
    if raw != written + skipped:
        raise LedgerError(f"{where}: ledger does not balance: raw {raw} != written {written} + skipped {skipped} "
                          f"(= {written + skipped}) [reason=ledger_unbalanced]")


def check_source_count(count: RawCount, manifest: dict[str, Any], source: str | Path, where: str) -> None:
    """Raise LedgerError unless the raw items enumerated in the source are what the shards account for.

    Args:
        count: the corpus's ``count_raw`` for this split.
        manifest: the split's manifest: its report's ``raw`` (= written + skipped) or, for a count in index rows
            (``count.rows``), its ``rows``.
        source: the raw root enumerated, for the message.
        where: ``<corpus>/<split>``, for the message.
    """
    report = manifest["report"]
    if count.rows:
        accounted, how = manifest["rows"], f"the index holds {manifest['rows']} rows"
    else:
        accounted = report["raw"]
        how = f"the shards account for {accounted} (written {report['written']} + skipped {report['skipped']})"
    if count.raw != accounted:
        change = "fewer" if count.raw < accounted else "more"
        raise LedgerError(
            f"{where}: the source {source} has {count.raw} raw items ({count.unit}), {how}: "
            f"{abs(count.raw - accounted)} {change} than when sharded; re-run `mmdata shard` if the source changed "
            f"on purpose [reason=raw_mismatch]")
