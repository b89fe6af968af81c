"""The examples run against real PoPs, as a reader of the docs would run them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.processes import NodeProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "name", ["feature_flags", "ab_bucket", "session_store", "rate_limiter", "flag_cache"]
)
def test_example_runs(name: str, start_node: Callable[..., NodeProcess]) -> None:
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    other = name in ("session_store", "flag_cache")
    args = ["--url", a.url] + (["--other", b.url] if other else [])
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    if name == "session_store":
        assert "['book', 'pen']" in result.stdout
    if name == "flag_cache":
        assert "after: {'on': True}" in result.stdout
