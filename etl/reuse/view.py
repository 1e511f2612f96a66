"""A store as its journal says it is now (etl.reuse.journal): the latest checkpoint, then the
entries after it, followed as they land."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from etl.errors import EmbedEtlError
from etl.reuse.journal import Entry, Journal, JournalError, StoredFile

log = logging.getLogger(__name__)


class StoreView:
    """What one store holds as its journal says: the latest checkpoint, then the entries after
    it. ``follow`` reads what landed since, one request when nothing did."""

    def __init__(self, journal: Journal, keep_hashes: bool = True) -> None:
        self.journal = journal
        self.keep_hashes = keep_hashes  # a reader hands them to its index and keeps none
        self.next = 0  # the next entry to read
        self.checkpoint = -1  # the number of the checkpoint the files come from
        self.files: dict[str, StoredFile] = {}
        self.added_at: dict[str, int] = {}  # the add entry that named each file after it
        self.retired: list[list[Any]] = []
        self.skipped: list[str] = []  # damaged entries, by key

    def refuse_damaged(self) -> None:
        """A journal with damaged entries is not rewritten: what they name would be dropped."""
        if self.skipped:
            raise EmbedEtlError(
                f"vector store {self.journal.storage.uri()}: journal entries "
                f"{', '.join(self.skipped)} are damaged, so what they name is not known; nothing "
                "changed (`store check` lists them; delete them to give up what they name)"
            )

    def load(self) -> list[StoredFile]:
        """Start from the latest checkpoint; every file live now."""
        self.next = self.journal.start()
        return self.follow()

    def follow(self) -> list[StoredFile]:
        """Read the entries that landed since; the files they add (a checkpoint's files when
        one landed: it replaces what came before)."""
        added: dict[str, StoredFile] = {}
        for seq, entry in self.entries():
            if entry is None:
                continue
            if entry.kind == "checkpoint":
                self.checkpoint = seq
                self.files = {f.name: f for f in entry.files()}
                self.added_at = {}
                self.retired = list(entry.header.get("retired", []))
                added = dict(self.files)
            else:
                for item in entry.files():
                    if item.name not in self.files:
                        added[item.name] = item
                        self.files[item.name] = item if self.keep_hashes else item.bare()
                        self.added_at[item.name] = seq
        return list(added.values())

    def entries(self) -> Iterator[tuple[int, Entry | None]]:
        """The entries from ``next`` on until the first missing number; a damaged one as None
        (warned about). A reader that fell behind entries gc deleted jumps to the checkpoint
        that replaced them."""
        while True:
            seq = self.next
            try:
                entry = self.journal.read(seq)
                if entry is None and self.journal.hint() > seq:
                    self.next = self.journal.start()
                    if self.next > seq:
                        continue
                    return
            except JournalError as exc:
                self.skipped.append(self.journal.key(seq))
                log.warning("vector store %s: skipping %s", self.journal.storage.uri(), exc)
                self.next += 1
                yield seq, None
                continue
            except (EmbedEtlError, OSError) as exc:  # a cache that cannot be read: embed
                log.warning(
                    "vector store %s: cannot read its journal: %s", self.journal.storage.uri(), exc
                )
                return
            if entry is None:
                return
            self.next += 1
            yield seq, entry
