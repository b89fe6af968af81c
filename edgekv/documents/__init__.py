"""The document store: JSON documents in collections, each a Y document.

``storage``     the Y documents (one event-loop thread owns them all), the
                update log, snapshots and materialized JSON in SQLite
``compaction``  the background loop that folds update logs into snapshots
``query``       where / order_by / limit / cursor parsed into SQL
``indexes``     declared expression indexes over the materialized JSON

The sans-IO part (JSON <-> Y, merge patches, limits, change encoding) is
:mod:`edgekv_replication.documents`; the HTTP routes under ``/v1/docs`` are
:mod:`edgekv.http.doc_routes`. See ``docs/documents.md``.
"""
