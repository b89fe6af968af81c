"""The latency matrix the proxy harness and the simulator share."""

from __future__ import annotations

import pytest

from testkit.wan import LinkShape, hub_delays, wan_model


def test_four_regions_have_every_inter_region_rtt() -> None:
    wan = wan_model(4)
    rtts = {wan.rtt_ms(a, b) for a in wan.regions for b in wan.regions if a != b}
    assert rtts == {40.0, 80.0, 150.0}
    assert wan.rtt_ms("r00", "r00") == 2.0
    assert wan.rtt_ms("r00", "r03") == wan.rtt_ms("r03", "r00")  # symmetric
    assert wan.largest_rtt_ms == 150.0


def test_twenty_regions_fill_continents_of_five() -> None:
    wan = wan_model(20)
    assert wan.rtt_ms("r00", "r04") == 40.0
    assert wan.rtt_ms("r04", "r05") == 80.0
    assert wan.rtt_ms("r00", "r19") == 150.0


def test_a_link_shape_is_half_the_rtt_each_way_with_bounded_jitter() -> None:
    shape = wan_model(4).shape("r00", "r03")
    assert shape.delay_ms == 75.0
    assert 0 < shape.jitter_ms <= 7.5


def test_impossible_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="durations"):
        LinkShape(delay_ms=-1)
    with pytest.raises(ValueError, match="positive rate"):
        LinkShape(bytes_per_second=0)


def test_hub_delays_put_one_server_near_every_pair() -> None:
    two = wan_model(2)
    delays, error = hub_delays(two)
    assert delays == {"r00": 10.0, "r01": 10.0}  # 40 ms RTT: 20 ms one way, halved
    assert error == 0.0
    four = wan_model(4)
    delays, error = hub_delays(four)
    for a in four.regions:
        for b in four.regions:
            if a < b:
                assert abs(delays[a] + delays[b] - four.rtt_ms(a, b) / 2) <= error
    assert error < 20  # one server cannot be exact for 40/80/150 ms; the fit says how far
    assert delays["r03"] == max(delays.values())  # the far region is farthest from the server
