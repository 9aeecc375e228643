"""The byte pipe's transform that lands only what changed: source chunks in, only the tuples the
destination does not hold out (the differ does the framing and hashing). The source stream
starts while the municipality's stored hashes are still being read: what arrives meanwhile is
kept."""

from __future__ import annotations

import anyio

from syncd.engine.rowdiff.pydiffer import RowDiffer

# Source bytes kept while the stored hashes still arrive, by every landing of the process
# together: the source stream starts at once and waits only past this much (a large
# municipality's hashes take a moment to read), whatever the number of landings at once.
PENDING_LIMIT = 96 * 2**20


class DiffTransform:
    """The pipe's transform: source chunks in, the destination's new rows out. Until the stored
    hashes are in (`ready`), chunks are kept by the differ, within PENDING_LIMIT for all."""

    pending = 0  # bytes kept by every landing of the process

    def __init__(self, differ: RowDiffer):
        self.differ = differ
        self.ready = anyio.Event()
        self.rows = 0
        self._flushed = False
        self._kept = 0

    async def feed(self, chunk: bytes) -> bytes:
        if not self.ready.is_set():
            if DiffTransform.pending + len(chunk) <= PENDING_LIMIT:
                self._kept += len(chunk)
                DiffTransform.pending += len(chunk)
                return self.differ.feed(chunk)  # kept until flushed
            await self.ready.wait()
        return self._flush() + self.differ.feed(chunk)

    def release(self) -> None:
        """What this landing kept no longer counts (flushed, or the landing failed)."""
        DiffTransform.pending -= self._kept
        self._kept = 0

    async def finish(self) -> bytes:
        await self.ready.wait()
        tail = self._flush() + self.differ.finish()
        self.rows = self.differ.counts()["rows_new"]
        return tail

    def _flush(self) -> bytes:
        if self._flushed:
            return b""
        self._flushed = True
        out = self.differ.flush()
        self.release()
        return out
