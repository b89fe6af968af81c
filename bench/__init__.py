"""EdgeKV benchmark: the node against a bare aiohttp handler and raw ``sqlite3``.

Absolute requests per second say little on their own: they depend on the
machine. What the project commits to are *ratios* measured side by side in one
run -- how much of aiohttp's own throughput the node keeps for GET, how much of
its GET throughput it keeps for durable PUT -- so ``python -m bench`` measures
the node and its two baselines in interleaved rounds and prints those ratios.
See ``bench/README.md`` and ``docs/performance.md``.
"""
