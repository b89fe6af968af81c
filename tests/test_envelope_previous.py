"""The peer envelope against the previous version's decoder and encoder (rolling upgrades).

The previous version's envelope module is loaded from the repository's history
(:data:`testkit.previous.PREVIOUS_VERSION`): what this version sends a peer of
that version must decode there, and what such a peer sends must decode here,
marked as coming from the previous version.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from edgekv_replication.changes import Change
from edgekv_replication.envelope import (
    Ack,
    Batch,
    Defer,
    Hello,
    Members,
    Progress,
    Welcome,
    decode,
    encode,
)
from edgekv_replication.session import (
    FEATURES,
    Identity,
    PeerCursor,
    PullSession,
    ServeSession,
    reads_regions,
    reads_relay_marks,
)
from testkit.previous import PREVIOUS_VERSION, ROOT

HELLO = Hello(7, 3, "ams", "https://ams:8787", 41, 9, True, "eu-west")
WELCOME = Welcome(9, 5, "fra", 120, "eu-central")
MEMBERS = Members(
    (
        (7, "https://ams:8787", "ams", False, 1_700_000_000_000, "eu-west"),
        (9, "https://fra:8787", "fra", True, 1_700_000_000_001, ""),
    )
)


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The envelope module of the previous version, as its nodes run it."""
    path = "replication/edgekv_replication/envelope.py"
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{PREVIOUS_VERSION}:{path}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    file = tmp_path_factory.mktemp("previous") / "envelope.py"
    file.write_bytes(source)
    spec = importlib.util.spec_from_file_location("previous_envelope", file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["previous_envelope"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["previous_envelope"]
    return module


def test_the_previous_decoder_refuses_the_form_with_regions(previous: ModuleType) -> None:
    # Why the previous form exists: the older decoder insists on exact field counts.
    for message in (HELLO, WELCOME, MEMBERS):
        with pytest.raises(previous.EnvelopeError, match="fields"):
            previous.decode(encode(message))


def test_hello_for_a_previous_server_decodes_there_without_region(previous: ModuleType) -> None:
    decoded = previous.decode(encode(HELLO, regions=False))
    assert decoded == previous.Hello(7, 3, "ams", "https://ams:8787", 41, 9, True)


def test_welcome_for_a_previous_puller_decodes_there_without_region(previous: ModuleType) -> None:
    decoded = previous.decode(encode(WELCOME, regions=False))
    assert decoded == previous.Welcome(9, 5, "fra", 120)


def test_members_for_a_previous_puller_have_five_fields(previous: ModuleType) -> None:
    decoded = previous.decode(encode(MEMBERS, regions=False))
    assert decoded == previous.Members(
        (
            (7, "https://ams:8787", "ams", False, 1_700_000_000_000),
            (9, "https://fra:8787", "fra", True, 1_700_000_000_001),
        )
    )


@pytest.mark.parametrize("regions", [True, False])
def test_the_other_kinds_are_the_same_in_both_versions(previous: ModuleType, regions: bool) -> None:
    change = Change("carts", b"u1", b"3 items", None, None, 5 << 16, 7, 42)
    batch = Batch(40, 45, (change,), 1_700_000_000_000, 41, 44)
    assert previous.decode(encode(batch, regions=regions)) == previous.Batch(
        40, 45, (change,), 1_700_000_000_000, 41, 44
    )
    assert previous.decode(encode(Ack(45), regions=regions)) == previous.Ack(45)
    assert previous.decode(encode(Defer(((7, 30),)), regions=regions)) == previous.Defer(((7, 30),))
    assert previous.decode(encode(Progress(45), regions=regions)) == previous.Progress(45)


def test_what_a_previous_node_sends_decodes_here_marked_as_previous(
    previous: ModuleType,
) -> None:
    hello = decode(previous.encode(previous.Hello(7, 3, "ams", "https://ams:8787", 41, 9, True)))
    assert hello == Hello(7, 3, "ams", "https://ams:8787", 41, 9, True, "", regions=False)
    welcome = decode(previous.encode(previous.Welcome(9, 5, "fra", 120)))
    assert welcome == Welcome(9, 5, "fra", 120, "", regions=False)
    members = decode(previous.encode(previous.Members(((7, "u", "ams", False, 1),))))
    assert members == Members(((7, "u", "ams", False, 1, ""),))


def test_this_version_round_trips_its_own_form_with_regions() -> None:
    assert decode(encode(HELLO)) == HELLO
    assert decode(encode(WELCOME)) == WELCOME
    assert decode(encode(MEMBERS)) == MEMBERS
    assert [decode(encode(m)).regions for m in (HELLO, WELCOME)] == [True, True]  # type: ignore[union-attr]


def test_a_puller_answers_a_previous_server_in_its_form(previous: ModuleType) -> None:
    session = PullSession(Identity(7, 3, "ams", "https://ams:8787", "eu-west"))
    welcome = decode(previous.encode(previous.Welcome(9, 5, "fra", 120)))
    assert isinstance(welcome, Welcome)
    hello = session.on_welcome(welcome, PeerCursor(5, 30), acked=0, purged=0)
    assert not session.regions
    assert previous.decode(encode(hello, regions=session.regions)) == previous.Hello(
        7, 3, "ams", "https://ams:8787", 30, 5, False
    )


def test_a_puller_answers_a_server_of_this_version_with_its_region() -> None:
    session = PullSession(Identity(7, 3, "ams", "https://ams:8787", "eu-west"))
    hello = session.on_welcome(WELCOME, PeerCursor(5, 30), acked=0, purged=0)
    assert session.regions
    assert decode(encode(hello, regions=session.regions)) == Hello(
        7, 3, "ams", "https://ams:8787", 30, 5, False, "eu-west"
    )


def test_a_server_speaks_the_previous_form_to_a_puller_that_announced_nothing(
    previous: ModuleType,
) -> None:
    assert reads_regions(", ".join(FEATURES))
    assert reads_regions("future-thing , regions")
    assert not reads_regions("")
    assert not reads_regions("regionsx")
    me = Identity(9, 5, "fra", "https://fra:8787", "eu-central")
    serving = ServeSession(me, regions=reads_regions(""))
    welcome = previous.decode(encode(serving.welcome(120), regions=serving.regions))
    assert welcome == previous.Welcome(9, 5, "fra", 120)
    old_hello = decode(previous.encode(previous.Hello(7, 3, "ams", "u", 0, 5, False)))
    assert isinstance(old_hello, Hello)
    assert serving.on_hello(old_hello, 120, lambda node, cursor: False, removed=False) == 0
    assert not serving.regions


def test_a_server_falls_back_when_the_hello_has_no_region() -> None:
    # Announced, yet the Hello came in the previous form: answer in that form.
    serving = ServeSession(Identity(9, 5, "fra"), regions=True)
    old_hello = Hello(7, 3, "ams", "u", 0, 5, False, "", regions=False)
    serving.on_hello(old_hello, 120, lambda node, cursor: False, removed=False)
    assert not serving.regions
    serving = ServeSession(Identity(9, 5, "fra"), regions=True)
    serving.on_hello(HELLO, 120, lambda node, cursor: False, removed=False)
    assert serving.regions


def test_relayed_marks_go_only_to_a_puller_that_announced_them(previous: ModuleType) -> None:
    change = Change("carts", b"u1", b"3 items", None, None, 5 << 16, 7, 42)
    batch = Batch(40, 45, (change,), 1_700_000_000_000, 41, 44, ((8, 900), (11, 30)))
    assert decode(encode(batch)) == batch
    with pytest.raises(previous.EnvelopeError, match="fields"):
        previous.decode(encode(batch))
    assert reads_relay_marks(", ".join(FEATURES))
    assert not reads_relay_marks("regions")
    for announced, relayed in (("regions", None), ("regions, relay-marks", ((8, 900),))):
        serving = ServeSession(Identity(9, 5, "fra"), relay_marks=reads_relay_marks(announced))
        sent = serving.heartbeat(1, 44, lambda upto: {8: 900})
        assert sent.relayed == relayed
        if relayed is None:
            assert previous.decode(encode(sent)) == previous.Batch(0, 0, (), 1, 0, 44)
        # Sent once: only a newer mark goes again.
        assert serving.heartbeat(1, 44, lambda upto: {8: 900}).relayed == (
            None if relayed is None else ()
        )
