"""Per-run store of cached features: one entry per (cond uuid, block, resolution), holding one
state per slot (a `forecasters.History` for the TaylorSeer family; other techniques may keep other
state objects with `nbytes`).

Cond and uncond (and any further conds) each get their own entries, keyed by the uuid ComfyUI
gives every cond for the whole run; the batch of a model call is split into per-uuid row chunks,
so batched and split cond/uncond calls read and write the same entries. The resolution key is
(what, context window, the block's stream shapes): what = ("tokens", key) for a call on a token set a sampler publishes
(Fresco, SpecEdit: the key changes whenever the set of computed tokens does), else
("shapes", input shapes). A run that changes resolution, or samples a video in context windows,
keeps separate entries for each; a cond's entries of a token set (and of the groups of a ragged
one) are dropped as soon as the cond moves to another token set in the same window (they can
never be used again).
"""
from typing import Hashable, List, Tuple


def chunk_rows(batch: int, uuids: list) -> List[Tuple[object, slice]]:
    """[(uuid, slice of batch rows)] for a call that batches len(uuids) conds of equal size."""
    n = len(uuids) or 1
    if not uuids or batch % n:
        return [(tuple(uuids), slice(0, batch))]  # unexpected layout: treat the call as one cond
    rows = batch // n
    return [(u, slice(i * rows, (i + 1) * rows)) for i, u in enumerate(uuids)]


class SlotStore:
    def __init__(self):
        self._entries = {}
        self._token_sets = {}   # (uuid, window) -> the token-set key its entries belong to

    def use(self, uuid: Hashable, resolution: tuple) -> None:
        """A call of `uuid` at `resolution` (what, window, ...): when it names a new token set for
        the cond's window, forget the cond's entries of the previous one."""
        what, window = resolution[:2]
        if what[0] != "tokens":
            return
        current = self._token_sets.get((uuid, window))
        if current is not None and current != what:  # also the sub-sets of a ragged set's groups
            for key in [k for k in self._entries if k[0] == uuid and k[2][1] == window
                        and k[2][0][0] == "tokens" and k[2][0] != what]:
                del self._entries[key]
        self._token_sets[(uuid, window)] = what

    def entry(self, uuid: Hashable, block_key: tuple, resolution: tuple) -> dict:
        """The {slot: state} dict of one cond at one block and resolution (created empty)."""
        return self._entries.setdefault((uuid, block_key, resolution), {})

    def peek(self, uuid, block_key, resolution):
        return self._entries.get((uuid, block_key, resolution))

    def drop(self, uuids) -> None:
        """Forget everything cached for these conds (e.g. after a non-finite forecast)."""
        uuids = set(uuids)
        for key in [k for k in self._entries if k[0] in uuids]:
            del self._entries[key]
        for key in [k for k in self._token_sets if k[0] in uuids]:
            del self._token_sets[key]

    def clear(self) -> None:
        self._entries.clear()
        self._token_sets.clear()

    @property
    def n_slots(self) -> int:
        return sum(len(e) for e in self._entries.values())

    @property
    def n_conds(self) -> int:
        return len({k[0] for k, e in self._entries.items() if e})

    @property
    def nbytes(self) -> int:
        return sum(getattr(s, "nbytes", 0) for e in self._entries.values() for s in e.values())
