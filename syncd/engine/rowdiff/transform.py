"""The byte pipe's transform that lands only what changed: source chunks in, only the tuples the
destination does not hold out (the differ does the framing and hashing). The source stream
starts while the municipality's stored hashes are still being read: what arrives meanwhile is
kept. Where the landing reads where the stored rows are once the stream shows a change
(`hold_until_located`), the new rows wait for that read, kept too."""

from __future__ import annotations

import anyio

from syncd.engine.rowdiff.pydiffer import RowDiffer

# Source bytes kept while the stored hashes still arrive, by every landing of the process
# together: the source stream starts at once and waits only past this much (a large
# municipality's hashes take a moment to read), whatever the number of landings at once.
PENDING_LIMIT = 96 * 2**20


class DiffTransform:
    """The pipe's transform: source chunks in, the destination's new rows out. Until the stored
    hashes are in (`ready`), chunks are kept by the differ, within PENDING_LIMIT for all.

    With `hold_until_located`, the first new row sets `changed`, and new rows are held until
    `located` (the landing's connection reads the stored rows' places meanwhile; the
    destination's COPY, on that same connection, starts after), within PENDING_LIMIT too."""

    pending = 0  # bytes kept by every landing of the process

    def __init__(self, differ: RowDiffer, *, hold_until_located: bool = False):
        self.differ = differ
        self.ready = anyio.Event()
        self.changed = anyio.Event()
        self.located = anyio.Event()
        if not hold_until_located:
            self.located.set()
        self.rows = 0
        self._flushed = False
        self._kept = 0
        self._held: list[bytes] = []

    async def feed(self, chunk: bytes) -> bytes:
        if not self.ready.is_set():
            if DiffTransform.pending + len(chunk) <= PENDING_LIMIT:
                self._kept += len(chunk)
                DiffTransform.pending += len(chunk)
                return self.differ.feed(chunk)  # kept until flushed
            await self.ready.wait()
        return await self._out(self._flush() + self.differ.feed(chunk))

    async def _out(self, out: bytes) -> bytes:
        if self.located.is_set():
            return self._take_held() + out if self._held else out
        if not out:
            return b""
        self.changed.set()
        if DiffTransform.pending + len(out) <= PENDING_LIMIT:
            self._held.append(out)
            self._kept += len(out)
            DiffTransform.pending += len(out)
            return b""
        await self.located.wait()
        return self._take_held() + out

    def _take_held(self) -> bytes:
        held, self._held = b"".join(self._held), []
        self.release()
        return held

    def release(self) -> None:
        """What this landing kept no longer counts (flushed, or the landing failed)."""
        DiffTransform.pending -= self._kept
        self._kept = 0

    async def finish(self) -> bytes:
        await self.ready.wait()
        tail = self._flush() + self.differ.finish()
        self.rows = self.differ.counts()["rows_new"]
        if self._held or (tail and not self.located.is_set()):
            self.changed.set()
            await self.located.wait()
        return self._take_held() + tail

    def _flush(self) -> bytes:
        if self._flushed:
            return b""
        self._flushed = True
        out = self.differ.flush()
        self.release()
        return out
