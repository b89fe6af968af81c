"""Node settings: one table feeds the CLI flags, ``EDGEKV_*`` variables, TOML and docs.

Precedence, highest first: a ``edgekv serve`` flag, an ``EDGEKV_<NAME>``
environment variable, the TOML file given with ``--config``, the default.
``docs/configuration.md`` documents every setting; a test keeps it in step
with :data:`SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekv.auth import TokenSpec, parse_tokens
from edgekv.store.pg.statements import check_schema_name
from edgekv_replication.intake import NAMESPACE, REGION

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value the node cannot use."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration setting: name, type, default and help text."""

    name: str
    type: type[str] | type[int] | type[float] | type[bool]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    multiple: bool = False
    """A list: a repeatable flag, comma-separated in the environment, an array in TOML."""

    @property
    def flag(self) -> str:
        """The ``edgekv serve`` option for this setting."""
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        """The environment variable for this setting."""
        return "EDGEKV_" + self.name.upper()

    def parse(self, raw: object, source: str) -> Any:
        """Return ``raw`` converted to this setting's type, or raise ConfigError."""
        if self.multiple:
            if isinstance(raw, str):
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if not isinstance(raw, list | tuple):
                raise ConfigError(f"{self.name} from {source}: expected a list, got {raw!r}")
            return tuple(self._parse_one(item, source) for item in raw)
        return self._parse_one(raw, source)

    def _parse_one(self, raw: object, source: str) -> Any:
        if self.type is bool:
            return _parse_bool(raw, self.name, source)
        try:
            if self.type is int and isinstance(raw, bool | float):
                raise ValueError("not an integer")
            value: Any = self.type(raw)  # type: ignore[call-overload,arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{self.name} from {source}: expected {self.type.__name__}, got {raw!r}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{self.name} from {source}: {value!r} is not one of {', '.join(self.choices)}"
            )
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} from {source}: must be at least {self.minimum}")
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "./edgekv-data", "Directory of the node's SQLite database."),
    Setting("host", str, "127.0.0.1", "Address to listen on. Without tokens, loopback only."),
    Setting("port", int, 8787, "TCP port of the HTTP API.", minimum=0),
    Setting(
        "node_name",
        str,
        None,
        "Human-readable name of this PoP, shown in status (default: the host name).",
    ),
    Setting(
        "synchronous",
        str,
        "full",
        "SQLite durability: 'full' fsyncs every group commit (survives power loss); "
        "'normal' survives a process crash but may lose the last commits on power loss.",
        choices=("full", "normal"),
    ),
    Setting(
        "allow_new_node",
        bool,
        False,
        "Start even though edgekv.db is empty (0 bytes), making a new node with a new "
        "identity there. Without it such a node refuses to start: an empty database lost "
        "its data. A data directory without edgekv.db needs no flag. Use once, then unset.",
    ),
    Setting("max_key_bytes", int, 512, "Largest key, in bytes of UTF-8.", minimum=1),
    Setting("max_value_bytes", int, 25 * MIB, "Largest value, in bytes.", minimum=0),
    Setting("max_metadata_bytes", int, 1024, "Largest metadata, in bytes of JSON.", minimum=2),
    Setting("max_list_limit", int, 1000, "Most keys in one list page.", minimum=1),
    Setting("max_bulk_operations", int, 10_000, "Most operations in one bulk request.", minimum=1),
    Setting("max_get_many_keys", int, 100, "Most keys in one get-many request.", minimum=1),
    Setting(
        "max_get_many_bytes",
        int,
        25 * MIB,
        "Most bytes of values one get-many answer inlines; a value past the budget is "
        'answered as {"value": null, "value_bytes": N}, to fetch with GET.',
        minimum=0,
    ),
    Setting(
        "max_query_bytes",
        int,
        16 * MIB,
        "Most bytes of documents (JSON) one document query page answers; the page stops "
        "there with a cursor for the rest (it always holds at least one document).",
        minimum=1,
    ),
    Setting(
        "max_request_bytes",
        int,
        100 * MIB,
        "Largest request body (a bulk request's JSON included).",
        minimum=1024,
    ),
    Setting(
        "max_indexes_per_collection",
        int,
        16,
        "Most indexes declared on one document collection (each slows its writes).",
        minimum=0,
    ),
    Setting(
        "max_set_members",
        int,
        10_000,
        "Most members one set may hold; an add past it is refused whole (409 set_full).",
        minimum=1,
    ),
    Setting(
        "max_set_request_members",
        int,
        1000,
        "Most members one set request may add and remove together (400 too_many_members).",
        minimum=1,
    ),
    Setting(
        "max_watchers",
        int,
        10_000,
        "Most watch streams (/_watch) this node serves at once; over it a new one gets "
        "429 too_many_watchers.",
        minimum=0,
    ),
    Setting(
        "max_watchers_per_token",
        int,
        1_000,
        "Most watch streams one token (in protected mode: all local callers together) "
        "holds open on this node; over it a new one gets 429 too_many_watchers.",
        minimum=0,
    ),
    Setting(
        "watch_buffer_bytes",
        int,
        1 * MIB,
        "Bytes of events queued for one watcher that does not read; past them the "
        "watcher is cut (its stream closed, to resume from its last event id).",
        minimum=64 * 1024,
    ),
    Setting(
        "watch_value_bytes",
        int,
        64 * 1024,
        "Largest value (or document JSON) a watch event carries; a larger one is left "
        "out, with value_bytes giving its size (fetch it with GET).",
        minimum=0,
    ),
    Setting(
        "watch_heartbeat",
        float,
        15.0,
        "Seconds between heartbeat comments on an idle watch stream (keeps proxies from "
        "closing it; carries a fresh resume token when the log moved on).",
        minimum=0.05,
    ),
    Setting(
        "watch_fanout",
        bool,
        True,
        "Write the live events of key-value watch streams on plain HTTP from a helper "
        "process started with the node, on the CPU the node's own work leaves (lowest "
        "priority): watchers then barely slow writes. false: the node writes them itself, "
        "as it always does for TLS streams, documents, counters and sets.",
    ),
    Setting(
        "idle_timeout",
        float,
        60.0,
        "Seconds a connection may stay open without a request in progress (before its "
        "first request and between requests) before the node closes it.",
        minimum=0.1,
    ),
    Setting(
        "header_timeout",
        float,
        10.0,
        "Seconds from a request's first byte to the end of its headers before the node "
        "closes the connection (a client that drips its headers).",
        minimum=0.1,
    ),
    Setting(
        "body_timeout",
        float,
        30.0,
        "Seconds a request body may go without a byte arriving (a client that stops "
        "sending it) before the node answers 408 request_timeout, writes nothing and "
        "closes the connection.",
        minimum=0.1,
    ),
    Setting(
        "read_cache_entries",
        int,
        100_000,
        "Entries of the in-memory read cache (values up to 64 KiB); 0 turns it off. "
        "Writes invalidate it before they are acknowledged, so reads stay exact.",
        minimum=0,
    ),
    Setting(
        "bookmark_timeout",
        float,
        2.0,
        "Seconds a read carrying a bookmark waits for replication to reach it before "
        "answering 503 bookmark_not_reached.",
        minimum=0,
    ),
    Setting(
        "shutdown_timeout",
        float,
        10.0,
        "Seconds a stopping node waits for in-flight requests before closing.",
        minimum=0,
    ),
    Setting(
        "console",
        bool,
        True,
        "Serve the operator web console at /ui/ (admin token) and keep the last hour of "
        "this node's metrics for its charts (docs/console.md).",
    ),
    Setting(
        "peer",
        str,
        (),
        "URL of a seed peer to replicate with (repeatable); the rest of the cluster is "
        "learned from it.",
        multiple=True,
    ),
    Setting(
        "peer_discovery",
        bool,
        True,
        "Replicate with every member learned from peers (true), or only with the --peer "
        "seeds (false: a fixed topology such as a line or hub and spokes).",
    ),
    Setting(
        "region",
        str,
        "default",
        "Region of this node (a name such as eu-west). With a backbone, peer streams run "
        "only between members of one region; other regions' changes come over the backbone.",
    ),
    Setting(
        "max_region_peers",
        int,
        16,
        "Most members this node pulls from directly (a stable choice among its region's "
        "members; the others' changes reach it relayed).",
        minimum=1,
    ),
    Setting(
        "relay_choice",
        bool,
        False,
        "Take each region-mate not pulled directly through one chosen peer, deferring it at "
        "the others, so each change arrives once (regions larger than max_region_peers + 1; "
        "experimental: docs/scale.md).",
    ),
    Setting(
        "backbone",
        str,
        None,
        "NATS server with JetStream joining the regions (nats://host:4222); each node "
        "publishes its own changes to it and consumes the other regions'.",
    ),
    Setting(
        "backbone_stream",
        str,
        "EDGEKV",
        "Name of the JetStream stream (and subject prefix) of the backbone; one per cluster.",
    ),
    Setting(
        "member_down_timeout",
        float,
        30.0,
        "Seconds without word from a member (stream or backbone) before status shows it "
        "down; logged once per change of state.",
        minimum=0.1,
    ),
    Setting(
        "advertise_url",
        str,
        None,
        "URL at which peers reach this node (default: the URL it listens on).",
    ),
    Setting(
        "peer_stall_timeout",
        float,
        30.0,
        "Seconds a peer stream may go without the peer reading any of what is queued for "
        "it; then the node closes the stream and logs it (a peer that does not read holds "
        "at most one page, 8 MiB plus one change, twice over).",
        minimum=0.1,
    ),
    Setting(
        "cluster_secret",
        str,
        None,
        "Shared secret every peer request must carry. Required when tokens are configured. "
        "The flag shows in ps: prefer cluster_secret_file or EDGEKV_CLUSTER_SECRET.",
    ),
    Setting(
        "cluster_secret_file",
        str,
        None,
        "File holding the cluster secret (surrounding whitespace ignored); the way to "
        "give it that no other local user can read. Exclusive with cluster_secret.",
    ),
    Setting(
        "cluster_secret_accept",
        str,
        None,
        "A second secret this node accepts from peers but never sends, for rotating the "
        "cluster secret with no pause in replication (see docs/operations.md). Prefer "
        "cluster_secret_accept_file.",
    ),
    Setting(
        "cluster_secret_accept_file",
        str,
        None,
        "File holding cluster_secret_accept (surrounding whitespace ignored). Exclusive "
        "with cluster_secret_accept.",
    ),
    Setting(
        "tls_cert",
        str,
        None,
        "PEM certificate: serve HTTPS (API and peer streams) and present it to peers.",
    ),
    Setting("tls_key", str, None, "PEM private key of tls_cert."),
    Setting(
        "tls_ca",
        str,
        None,
        "PEM CA bundle that peers' certificates must chain to (default: system CAs).",
    ),
    Setting(
        "rate_limit",
        float,
        0.0,
        "Requests per second each token may make on average (0: no limit); a token's own "
        "rate_limit overrides it. Over the limit a request gets 429 rate_limited with "
        "Retry-After. Reloaded on SIGHUP.",
        minimum=0,
    ),
    Setting(
        "rate_limit_burst",
        int,
        0,
        "Requests a token without a rate_limit of its own may make at once before rate_limit "
        "applies (0, and for tokens with their own: one second's "
        "worth of its rate).",
        minimum=0,
    ),
    Setting(
        "max_clock_offset",
        float,
        0.5,
        "Seconds a remote change may be stamped ahead of the local clock before it is "
        "held back until the clock catches up.",
        minimum=0,
    ),
    Setting(
        "tombstone_horizon",
        float,
        7 * 86400.0,
        "Seconds a tombstone is kept at least. It is collected once every member has "
        "acknowledged it and this long has passed; a member out of contact for longer "
        "must re-sync in full (wipe its data directory).",
        minimum=0,
    ),
    Setting(
        "tombstone_gc_interval",
        float,
        60.0,
        "Seconds between tombstone collection passes.",
        minimum=0.01,
    ),
    Setting(
        "upstream",
        str,
        None,
        "PostgreSQL DSN of the upstream (postgresql://user:pass@host:5432/db): system of "
        "record and hub. Local changes are pushed to it and other PoPs' changes pulled.",
    ),
    Setting(
        "upstream_schema",
        str,
        "edgekv",
        "PostgreSQL schema holding EdgeKV's upstream tables (created and migrated by the node).",
    ),
    Setting(
        "strong_namespaces",
        str,
        (),
        "Namespace whose operations run in PostgreSQL transactions and are linearizable "
        "(repeatable). Declarations are shared through the upstream with every PoP.",
        multiple=True,
    ),
    Setting(
        "upstream_timeout",
        float,
        2.0,
        "Seconds a strong operation (or one upstream round trip) may take before it fails "
        "with 503 upstream_unavailable.",
        minimum=0.05,
    ),
    Setting(
        "upstream_poll_interval",
        float,
        0.1,
        "Seconds between polls of the upstream for changes pushed by other PoPs.",
        minimum=0.005,
    ),
    Setting(
        "upstream_batch_interval",
        float,
        0.2,
        "Seconds local changes gather before they are pushed to the upstream together.",
        minimum=0,
    ),
    Setting(
        "upstream_pull_bytes",
        int,
        32 * MIB,
        "Most bytes of values one page pulled from the upstream holds, besides its last "
        "row (a page always takes one row, whatever its size).",
        minimum=1,
    ),
    Setting(
        "upstream_pool_size",
        int,
        10,
        "Most connections to the upstream (strong operations run concurrently on them).",
        minimum=3,
    ),
    Setting(
        "test_clock_offset_ms",
        int,
        0,
        "Test only: shift this node's wall clock by this many milliseconds, to inject "
        "clock skew in fault-injection tests. Leave 0 in production.",
    ),
    Setting(
        "test_clock_offset_file",
        str,
        None,
        "Test only: a file holding a clock offset in milliseconds, read at start and again "
        "whenever the node gets SIGUSR1 (it then replaces test_clock_offset_ms), so "
        "fault-injection runs can jump and strobe the clock without a restart. Leave unset "
        "in production.",
    ),
    Setting(
        "test_broken_merge",
        bool,
        False,
        "Test only: deliberately break replication's merge (a remote change never replaces "
        "a local entry), to show the fault-injection harness catches it. Never in production.",
    ),
    Setting(
        "log_level",
        str,
        "info",
        "Logging level.",
        choices=("debug", "info", "warning", "error"),
    ),
    Setting(
        "event_loop",
        str,
        "auto",
        "Event loop: 'auto' runs uvloop where it is installed (pip install \"edgekv[fast]\") "
        "and asyncio's loop otherwise; 'asyncio' never uses uvloop; 'uvloop' refuses to start "
        "without it.",
        choices=("auto", "asyncio", "uvloop"),
    ),
)


def _parse_bool(raw: object, name: str, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name} from {source}: expected true or false, got {raw!r}")


SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Keys a TOML file may hold besides the scalar settings.
TOML_ONLY_KEYS = ("tokens",)


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved configuration of one node."""

    data_dir: str = "./edgekv-data"
    host: str = "127.0.0.1"
    port: int = 8787
    node_name: str | None = None
    synchronous: str = "full"
    allow_new_node: bool = False
    max_key_bytes: int = 512
    max_value_bytes: int = 25 * MIB
    max_metadata_bytes: int = 1024
    max_list_limit: int = 1000
    max_bulk_operations: int = 10_000
    max_get_many_keys: int = 100
    max_get_many_bytes: int = 25 * MIB
    max_query_bytes: int = 16 * MIB
    max_request_bytes: int = 100 * MIB
    max_indexes_per_collection: int = 16
    max_set_members: int = 10_000
    max_set_request_members: int = 1000
    max_watchers: int = 10_000
    max_watchers_per_token: int = 1_000
    watch_buffer_bytes: int = 1 * MIB
    watch_value_bytes: int = 64 * 1024
    watch_heartbeat: float = 15.0
    watch_fanout: bool = True
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    read_cache_entries: int = 100_000
    bookmark_timeout: float = 2.0
    shutdown_timeout: float = 10.0
    console: bool = True
    peer: tuple[str, ...] = ()
    peer_discovery: bool = True
    region: str = "default"
    max_region_peers: int = 16
    relay_choice: bool = False
    backbone: str | None = None
    backbone_stream: str = "EDGEKV"
    member_down_timeout: float = 30.0
    advertise_url: str | None = None
    peer_stall_timeout: float = 30.0
    cluster_secret: str | None = None
    cluster_secret_file: str | None = None
    cluster_secret_accept: str | None = None
    cluster_secret_accept_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    rate_limit: float = 0.0
    rate_limit_burst: int = 0
    max_clock_offset: float = 0.5
    tombstone_horizon: float = 7 * 86400.0
    tombstone_gc_interval: float = 60.0
    upstream: str | None = None
    upstream_schema: str = "edgekv"
    strong_namespaces: tuple[str, ...] = ()
    upstream_timeout: float = 2.0
    upstream_poll_interval: float = 0.1
    upstream_batch_interval: float = 0.2
    upstream_pull_bytes: int = 32 * MIB
    upstream_pool_size: int = 10
    test_clock_offset_ms: int = 0
    test_clock_offset_file: str | None = None
    test_broken_merge: bool = False
    log_level: str = "info"
    event_loop: str = "auto"
    tokens: tuple[TokenSpec, ...] = field(default=())

    @property
    def display_name(self) -> str:
        """The node name, defaulting to the host name."""
        return self.node_name or socket.gethostname()

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some settings changed."""
        return dataclasses.replace(self, **changes)


def load_config(
    cli: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Resolve the configuration from CLI values, environment and a TOML file.

    ``cli`` maps setting names to values given on the command line (``None``
    meaning not given). ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    tokens: tuple[TokenSpec, ...] = ()
    if config_file is not None:
        document = _read_toml(Path(config_file))
        unknown = sorted(set(document) - set(SETTINGS_BY_NAME) - set(TOML_ONLY_KEYS))
        if unknown:
            raise ConfigError(f"{config_file}: unknown setting(s) {', '.join(unknown)}")
        for name, raw in document.items():
            if name in SETTINGS_BY_NAME:
                values[name] = SETTINGS_BY_NAME[name].parse(raw, str(config_file))
        try:
            tokens = parse_tokens(document.get("tokens", []))
        except ValueError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    for setting in SETTINGS:
        raw_env = env.get(setting.env_var)
        if raw_env is not None and raw_env != "":
            values[setting.name] = setting.parse(raw_env, setting.env_var)
    for name, raw in (cli or {}).items():
        if raw is not None and raw != ():
            values[name] = SETTINGS_BY_NAME[name].parse(raw, SETTINGS_BY_NAME[name].flag)
    if values.get("cluster_secret_file") is not None:
        if values.get("cluster_secret") is not None:
            raise ConfigError("give cluster_secret or cluster_secret_file, not both")
        values["cluster_secret"] = _read_secret_file(Path(values["cluster_secret_file"]))
    if values.get("cluster_secret_accept_file") is not None:
        if values.get("cluster_secret_accept") is not None:
            raise ConfigError("give cluster_secret_accept or cluster_secret_accept_file, not both")
        accept_file = Path(values["cluster_secret_accept_file"])
        values["cluster_secret_accept"] = _read_secret_file(
            accept_file, "cluster_secret_accept_file"
        )
    config = Config(**values, tokens=tokens)
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    """Refuse combinations of settings that cannot work together."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    if config.strong_namespaces and not config.upstream:
        raise ConfigError("strong_namespaces need an upstream: set upstream to a PostgreSQL DSN")
    if config.upstream is not None and not config.upstream.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError("upstream must be a postgresql:// DSN")
    try:
        check_schema_name(config.upstream_schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for ns in config.strong_namespaces:
        if not NAMESPACE.fullmatch(ns):
            refused = "does not match [A-Za-z0-9_.-]{1,64} or is '.' or '..'"
            raise ConfigError(f"strong_namespaces: {ns!r} {refused}")
        if ns.startswith("_edgekv."):
            raise ConfigError(f"strong_namespaces: {ns!r} is reserved for the node itself")
    if not REGION.fullmatch(config.region):
        raise ConfigError(f"region: {config.region!r} does not match [A-Za-z0-9_.-]{{1,64}}")
    if not REGION.fullmatch(config.backbone_stream) or "." in config.backbone_stream:
        raise ConfigError(
            f"backbone_stream: {config.backbone_stream!r} does not match [A-Za-z0-9_-]{{1,64}}"
        )
    if config.backbone is not None and not config.backbone.startswith(("nats://", "tls://")):
        raise ConfigError("backbone must be a nats:// (or tls://) URL")
    if config.cluster_secret is not None and not config.cluster_secret.strip():
        # An empty secret would match a peer request that carries none.
        raise ConfigError("cluster_secret must not be empty")
    if config.cluster_secret_accept is not None:
        if not config.cluster_secret_accept.strip():
            raise ConfigError("cluster_secret_accept must not be empty")
        if config.cluster_secret is None:
            raise ConfigError("cluster_secret_accept goes with a cluster_secret")
    if config.watch_buffer_bytes < 2 * config.watch_value_bytes + 64 * 1024:
        # One event must fit in a watcher's buffer, or it would be cut for ever.
        raise ConfigError("watch_buffer_bytes must be at least 2 x watch_value_bytes + 64 KiB")
    if config.tokens and config.peer and not config.cluster_secret:
        raise ConfigError(
            "a node with tokens that replicates needs cluster_secret, "
            "so peers can authenticate to each other"
        )


def _read_secret_file(path: Path, setting: str = "cluster_secret_file") -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting} {path}: cannot read it: {exc}") from None
    if not secret:
        raise ConfigError(f"{setting} {path} is empty")
    return secret


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
