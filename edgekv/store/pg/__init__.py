"""The upstream's tables in PostgreSQL: their schema, every statement, the connection type.

:mod:`~edgekv.store.pg.schema` creates and migrates the tables,
:mod:`~edgekv.store.pg.statements` holds every statement the upstream runs,
:mod:`~edgekv.store.pg.connection` names asyncpg's connection type and failures.
The services in :mod:`edgekv.upstream` run them.
"""
