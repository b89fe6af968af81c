"""The document store: JSON documents in collections, each a Y document.

``compaction``  the background loop that folds update logs into snapshots
``query``       where / order_by / limit / cursor parsed (the SQL is built in
                :mod:`edgekv.store.doc_queries`)
``indexes``     declaring expression indexes over the materialized JSON

The Y documents and their tables (update log, snapshots, materialized JSON)
are :mod:`edgekv.store.documents`. The sans-IO part (JSON <-> Y, merge
patches, limits, change encoding) is :mod:`edgekv_replication.documents`; the
HTTP routes under ``/v1/docs`` are :mod:`edgekv.http.doc_routes`. See
``docs/documents.md``.
"""
