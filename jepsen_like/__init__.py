"""Fault-injection harness for EdgeKV (not installed; run from the repository root).

``testkit.proxy.TcpProxy`` puts a link the harness controls between two
nodes, so partitions are made by cutting proxies, with every byte staying on
127.0.0.1.
"""
