"""The previous version of EdgeKV, from the repository's own history, for upgrade tests.

A rolling upgrade runs nodes of two versions side by side. The previous
version is a fixed commit of this repository, unpacked with ``git archive``
into a directory of its own and run with ``PYTHONPATH`` pointing there
(the installed package is this version). It needs the repository's history:
CI runs on a full clone; a shallow one lacks the commit and the test says so.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PREVIOUS_VERSION = "3ab595a1dce5df2fdc09806ed7fcc439296279f8"
"""main before the operator's kit (issue 20): move it on at each release."""


def unpack(commit: str, dest: Path) -> dict[str, str]:
    """Unpack ``commit`` into ``dest``; return the environment that runs its ``edgekv``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"commit {commit} is not in this clone ({exc.stderr.decode().strip()}): "
            "the upgrade test needs the repository's history (git fetch --unshallow)"
        ) from None
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    paths = [dest, dest / "replication", dest / "client"]
    # PYTHONSAFEPATH: `python -m` would otherwise put the working directory (this
    # version's checkout, in a test run) ahead of PYTHONPATH.
    return {"PYTHONPATH": ":".join(str(path) for path in paths), "PYTHONSAFEPATH": "1"}
