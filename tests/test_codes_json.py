"""The error-code table exported as JSON (for the JS client) is the one in codes.py."""

from __future__ import annotations

import json
from pathlib import Path

from edgekv import docgen
from edgekv_replication.codes import ERROR_CODES

ROOT = Path(__file__).resolve().parent.parent


def test_committed_codes_json_is_current() -> None:
    committed = (ROOT / docgen.CODES_JSON).read_text()
    assert committed == docgen.codes_json(), "run: python -m edgekv.docgen"


def test_codes_json_holds_every_code_with_its_status() -> None:
    rows = json.loads(docgen.codes_json())
    assert [(row["code"], row["status"]) for row in rows] == [
        (entry.code, entry.status) for entry in ERROR_CODES.values()
    ]
