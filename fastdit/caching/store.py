"""Per-run store of cached features: one entry per (cond uuid, block, resolution), holding one
state per slot (a `forecasters.History` for the TaylorSeer family; other techniques may keep other
state objects with `nbytes`).

Cond and uncond (and any further conds) each get their own entries, keyed by the uuid ComfyUI
gives every cond for the whole run; the batch of a model call is split into per-uuid row chunks,
so batched and split cond/uncond calls read and write the same entries. The resolution key is
the shape of the block's input streams and the context window of the call: a run that changes
resolution, or samples a video in context windows, keeps separate entries for each.
"""


def chunk_rows(batch, uuids):
    """[(uuid, slice of batch rows)] for a call that batches len(uuids) conds of equal size."""
    n = len(uuids) or 1
    if not uuids or batch % n:
        return [(tuple(uuids), slice(0, batch))]  # unexpected layout: treat the call as one cond
    rows = batch // n
    return [(u, slice(i * rows, (i + 1) * rows)) for i, u in enumerate(uuids)]


class SlotStore:
    def __init__(self):
        self._entries = {}

    def entry(self, uuid, block_key, resolution):
        """The {slot: state} dict of one cond at one block and resolution (created empty)."""
        return self._entries.setdefault((uuid, block_key, resolution), {})

    def peek(self, uuid, block_key, resolution):
        return self._entries.get((uuid, block_key, resolution))

    def drop(self, uuids):
        """Forget everything cached for these conds (e.g. after a non-finite forecast)."""
        for key in [k for k in self._entries if k[0] in set(uuids)]:
            del self._entries[key]

    def clear(self):
        self._entries.clear()

    @property
    def n_slots(self):
        return sum(len(e) for e in self._entries.values())

    @property
    def n_conds(self):
        return len({k[0] for k in self._entries})

    @property
    def nbytes(self):
        return sum(getattr(s, "nbytes", 0) for e in self._entries.values() for s in e.values())
