"""The optional PostgreSQL upstream: system of record, hub, and home of strong namespaces.

:mod:`~edgekv.upstream.pg_schema` creates and migrates the tables in
PostgreSQL, :mod:`~edgekv.upstream.sql` holds every statement,
:mod:`~edgekv.upstream.strong` runs the linearizable operations and
:mod:`~edgekv.upstream.connector` is the peer that pushes local changes up and
pulls the other PoPs' changes down.
"""
