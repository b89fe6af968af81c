"""The optional PostgreSQL upstream: system of record, hub, and home of strong namespaces.

:mod:`~edgekv.store.pg.schema` creates and migrates the tables in
PostgreSQL, :mod:`~edgekv.store.pg.statements` holds every statement,
:mod:`~edgekv.upstream.strong` runs the linearizable operations and
:mod:`~edgekv.upstream.connector` is the peer that pushes local changes up and
pulls the other PoPs' changes down.
"""
