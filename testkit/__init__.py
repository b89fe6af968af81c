"""Helpers shared by the tests, the fault-injection harness and the benchmarks (not installed).

Each module has one job: :mod:`testkit.processes` runs real ``edgekv serve``
children, :mod:`testkit.responses` holds their HTTP answers and the error-shape
check, :mod:`testkit.proxy` is the TCP proxy that makes partitions,
:mod:`testkit.security` the credentials a secure cluster runs with,
:mod:`testkit.cluster` clusters of proxied nodes and their stored state,
:mod:`testkit.waiting` polling for a condition, :mod:`testkit.rawhttp` HTTP
over a raw socket, and :mod:`testkit.pg` the test PostgreSQL. It imports
nothing from ``tests``, ``jepsen_like`` or ``bench``; they import it.
"""
