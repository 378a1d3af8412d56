"""Keeping the output small and whole: compaction, checkpoints, vacuum, and the repair of what a task
that died between its two commits left behind (`Ledger.maintain`, `scriptorium maintain`)."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ledger.tables import COMMIT_KEY, LOCK_TABLE, MAINTAIN_EVERY_FILES, TABLES, _key_in, retry_commit

# one logger for the whole output, as before the split (`pipeline.ledger`: what users filter on)
log = logging.getLogger("pipeline.ledger")


class Maintenance:
    """The maintenance half of `Ledger` (a mixin: it uses the ledger's `table`, `read` and `lock`)."""

    def maintain(self, retention_hours: float = 168.0, vacuum: bool = True, repair: bool = True) -> dict[str, Any]:
        """Compact small files, checkpoint, delete orphaned segments, vacuum. Call under the lock.

        Orphaned segments are rows whose commit never got its `recordings` row (a task died between
        the tables) and whose input was not redone since; with the lock held no job is between its
        two commits, so they can go. Returns what was done, per table."""
        out: dict[str, Any] = {"orphaned_segment_recordings": 0, "recordings_to_redo": 0}
        if repair and self.table("segments") is not None and self.table("recordings") is not None:
            committed = self.read("recordings", [*COMMIT_KEY, "num_segments"])
            seg = self.read("segments", COMMIT_KEY)
            orphans = (
                seg.filter(pc.invert(_key_in(seg, committed))).group_by(["recording_id", "write_id"]).aggregate([])
            )
            out["orphaned_segment_recordings"] = orphans.num_rows
            self._delete("segments", orphans)
            # A recordings row whose segments were replaced by a write that then died before its own
            # recordings commit (and whose cause of redo went away, e.g. a fingerprint change was
            # reverted) would be skipped forever while no segment matches it: uncommit it, so the
            # next run redoes it.
            has_segs = pc.greater(pc.fill_null(committed.column("num_segments"), 0), 0)
            broken = committed.filter(pc.and_(has_segs, pc.invert(_key_in(committed, seg))))
            out["recordings_to_redo"] = broken.num_rows
            self._delete("recordings", broken.select(["recording_id", "write_id"]))
        for name in TABLES:
            dt = self.table(name)
            if dt is None:
                continue
            before = len(dt.file_uris())
            metrics = retry_commit(lambda: self.table(name).optimize.compact())
            dt = self.table(name)
            dt.create_checkpoint()
            dt.cleanup_metadata()
            # full: also the files a run staged and never committed (it died first; pipeline/ledger/staging.py)
            removed = (
                dt.vacuum(
                    retention_hours=int(retention_hours), enforce_retention_duration=False, dry_run=False, full=True
                )
                if vacuum
                else []
            )
            out[name] = {
                "files_before": before,
                "files_after": len(self.table(name).file_uris()),
                "version": dt.version(),
                "vacuumed": len(removed),
                "compacted": metrics.get("numFilesRemoved", 0),
            }
        lock = self.table(LOCK_TABLE)
        if lock is not None:  # every heartbeat is a commit with a one-row file: keep an hour of them
            lock.create_checkpoint()
            lock.cleanup_metadata()
            out["lock_vacuumed"] = (
                len(lock.vacuum(retention_hours=1, enforce_retention_duration=False, dry_run=False)) if vacuum else 0
            )
        return out

    def _delete(self, name: str, which: pa.Table, chunk: int = 500) -> None:
        """Delete the rows of (recording_id, write_id) pairs, a few hundred per transaction."""
        pairs = which.to_pylist()
        for i in range(0, len(pairs), chunk):
            pred = " OR ".join(
                f"(recording_id = '{p['recording_id']}' AND write_id = '{p['write_id']}')" for p in pairs[i : i + chunk]
            )
            retry_commit(lambda pred=pred: self.table(name).delete(pred))

    def maintenance_due(self, every_files: int = MAINTAIN_EVERY_FILES) -> bool:
        """Due when a table holds many small files (each write task's commit adds one per table)."""
        for name in TABLES:
            dt = self.table(name)
            if dt is not None and len(dt.file_uris()) >= every_files:
                return True
        return False

    def maintain_if_due(self, every_files: int = MAINTAIN_EVERY_FILES) -> dict[str, Any] | None:
        """End of a run: maintain when due. Never fails the run (the data is committed already)."""
        try:
            if self.maintenance_due(every_files):
                # no orphan scan here (it reads all of `segments`): a rerun's predicate overwrites
                # clear what crashes left; `scriptorium maintain` repairs the rest
                done = self.maintain(repair=False)
                log.info("output maintenance: %s", done)
                return done
        except Exception:  # noqa: BLE001
            log.exception("output maintenance failed; `scriptorium maintain` or the next run retries it")
        return None
