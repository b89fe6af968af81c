"""The answer of a get-many request, within a byte budget.

Values are inlined (base64) in request order while their raw sizes fit in
``max_get_many_bytes``; a value that does not fit is answered as
``{"value": null, "value_bytes": N}``, to be fetched with a single GET
(DynamoDB's BatchGetItem answers its unprocessed keys the same way). Sizes
are read before values, so a value left out is never brought into memory:
the answer holds at most the budget of values (4/3 of it as base64), read
one at a time, whatever the request names.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence

from edgekv.store.kv import Entry
from edgekv.store.store import Store
from edgekv_replication.versions import encode_version


def answer_pieces(
    store: Store, ns: str, names: Sequence[str], keys: Sequence[bytes], budget: int
) -> list[bytes]:
    """The JSON answer ``{"entries": {...}}`` as byte pieces (large values stay separate).

    A name given twice is answered once, as a JSON object holds each name once.
    """
    now = time.time()
    remaining = budget
    pieces = [b'{"entries": {']
    separator = b""
    for name, key in dict(zip(names, keys, strict=True)).items():
        pieces.append(separator + json.dumps(name).encode() + b": ")
        separator = b", "
        size = store.value_size(ns, key, now)
        entry = store.get(ns, key, now) if size is not None and size <= remaining else None
        if entry is not None and len(entry.value) <= remaining:
            remaining -= len(entry.value)
            pieces += _inlined(entry)
        elif size is None or (entry is None and size <= remaining):
            pieces.append(b"null")  # absent, or deleted between the two reads
        else:
            omitted = size if entry is None else len(entry.value)
            pieces.append(b'{"value": null, "value_bytes": %d}' % omitted)
    pieces.append(b"}}")
    return pieces


def _inlined(entry: Entry) -> list[bytes]:
    rest = {
        "metadata": json.loads(entry.metadata) if entry.metadata else None,
        "expiration": entry.expiration,
        "version": encode_version(entry.hlc, entry.node),
    }
    # The base64 stays a piece of its own: joining it to the rest would copy it.
    return [b'{"value": "', base64.b64encode(entry.value), b'", ' + json.dumps(rest)[1:].encode()]
