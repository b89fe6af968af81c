"""Constants of the peer protocol that both ends of a stream share."""

STREAM_PATH = "/v1/peer/stream"
"""Where a node serves its pull stream (WebSocket)."""

SECRET_HEADER = "EdgeKV-Cluster-Secret"
"""The header that carries the cluster secret on every peer request."""

FEATURES_HEADER = "EdgeKV-Peer-Features"
"""The header a puller announces what its version reads with when it opens a
stream (:data:`edgekv_replication.session.FEATURES`): the server speaks first."""
