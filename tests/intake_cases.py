"""Invalid data for the three ways into a node (HTTP, peers, upstream), as hypothesis strategies.

The nodes under test run with small limits (:data:`LIMIT_ARGS`), so an
over-limit key, value or metadata costs a few bytes, not megabytes.
"""

from __future__ import annotations

from hypothesis import strategies as st

from edgekv_replication.changes import Change
from edgekv_replication.documents import MAX_Y_STATE_BYTES
from edgekv_replication.intake import MAX_EXPIRATION, NAMESPACE, Limits

LIMITS = Limits(max_key_bytes=16, max_value_bytes=64, max_metadata_bytes=32)
LIMIT_ARGS = [
    "--max-key-bytes",
    str(LIMITS.max_key_bytes),
    "--max-value-bytes",
    str(LIMITS.max_value_bytes),
    "--max-metadata-bytes",
    str(LIMITS.max_metadata_bytes),
]
HLC = 1 << 16
"""A stamp in 1970: never held back as ahead of the clock."""


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


bad_namespaces = st.one_of(
    st.sampled_from(["", ".", "..", "a b", "x/y", "é", "n" * 65, "ns\r\n", "@doc", "a:b"]),
    st.text(max_size=70).filter(lambda text: not NAMESPACE.fullmatch(text)),
)
bad_keys = st.one_of(
    st.sampled_from([b"", b".", b"..", b"\xff\xfe", b"ok\xc3", b"\xed\xa0\x80"]),
    st.binary(min_size=1, max_size=20).filter(lambda raw: not _is_utf8(raw)),
    st.binary(min_size=LIMITS.max_key_bytes + 1, max_size=40).map(lambda raw: raw.hex().encode()),
)
bad_values = st.binary(min_size=LIMITS.max_value_bytes + 1, max_size=200)
bad_metadata = st.one_of(
    st.sampled_from(
        [
            "",
            "not json",
            "[1]",
            "1",
            '"text"',
            "null",
            '{"a":1}\r\nX-Evil: 1',
            '{"a":"\r\n"}',
            '{"a":NaN}',
            '{"a":1,"a":2}',
            '{"é":1}',
            '{"a":"\x00"}',
            '{"k":"' + "v" * 40 + '"}',
        ]
    ),
    st.text(max_size=40).filter(lambda text: not text.startswith("{")),
)
bad_expirations = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=0),  # PostgreSQL stores 64 bits
    st.integers(min_value=MAX_EXPIRATION + 1, max_value=(1 << 63) - 1),
)


def good_change(ns: str, key: bytes, seq: int = 1, node: int = 0x1234) -> Change:
    """A change every node takes."""
    return Change(ns, key, b"value", '{"m":1}', None, HLC, node, seq)


def invalid_changes(ns: str) -> st.SearchStrategy[Change]:
    """A change of ``ns`` (or of a bad namespace) with one field the API would refuse."""
    base = good_change(ns, b"bad")
    return st.one_of(
        bad_namespaces.map(lambda bad: base._replace(ns=bad)),
        bad_keys.map(lambda bad: base._replace(key=bad)),
        bad_values.map(lambda bad: base._replace(value=bad)),
        bad_metadata.map(lambda bad: base._replace(metadata=bad)),
        bad_expirations.map(lambda bad: base._replace(expiration=bad)),
        st.sampled_from(
            [
                # Document changes: bad id, no update, bad version, an expiration.
                Change("@doc:c", b"_id", b"\x00\x00", None, None, HLC, 0x1234),
                Change("@doc:c", b"a/b", b"\x00\x00", None, None, HLC, 0x1234),
                Change("@doc:c", b"\xff", b"\x00\x00", None, None, HLC, 0x1234),
                Change("@doc:c", b"id", b"", None, None, HLC, 0x1234),
                Change("@doc:c", b"id", b"\x00\x00", "not-a-version", None, HLC, 0x1234),
                Change("@doc:c", b"id", b"\x00\x00", None, 2_000_000_000, HLC, 0x1234),
                Change("@doc:bad ns", b"id", b"\x00\x00", None, None, HLC, 0x1234),
                # Documents have their own bound, whatever max_value_bytes is.
                Change("@doc:c", b"id", b"u" * (MAX_Y_STATE_BYTES + 1), None, None, HLC, 1),
            ]
        ),
    )
