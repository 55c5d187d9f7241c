"""TOML configuration of the host daemons and the virtual handset.

Every key is declared once in `SECTIONS` (type, default, one-line doc); the
loaders, the validation and docs/config.md (`python -m upbx.host.config --markdown`)
all come from that table. A bad file raises one `ConfigError` naming the file,
the key and the problem.

Loaded values: "HOST:PORT" keys become ("host", port) tuples, secrets bytes,
paths absolute (relative to the config file's directory; "" stays ""), the
database ":memory:" stays as is, seconds of float keys are floats.
"""
import difflib
import ipaddress
import os
import re
import sys

from upbx.host.files import loose_secret_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REQUIRED = object()  # default of a key that has none
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class ConfigError(Exception):
    """A configuration file is unreadable or a key in it is wrong."""

    def __init__(self, path, key, problem):
        super().__init__(path, key, problem)
        self.path = str(path)
        self.key = key
        self.problem = problem

    def __str__(self):
        if self.key is None:
            return "%s: %s" % (self.path, self.problem)
        return "%s: key '%s': %s" % (self.path, self.key, self.problem)


class Key:
    """One configuration key: its kind, default and the line that documents it."""

    def __init__(self, name, kind, default, doc, **limits):
        self.name = name
        self.kind = kind  # a name in _CHECKS
        self.default = default
        self.doc = doc
        self.limits = limits  # min, max, choices, min_bytes


def _log_keys():
    return [
        Key("log_level", "choice", "info", "least severe message logged", choices=LOG_LEVELS),
        Key("log_format", "choice", "text", '"text" for people, "json" for one JSON object per line', choices=LOG_FORMATS),
    ]


SECTIONS = {
    "main": [
        Key("listen", "hostport", "0.0.0.0:4569", "UDP address for signalling and media of all remote hosts and phones"),
        Key("sip_listen", "hostport", "0.0.0.0:5060",
            "UDP address for SIP phones of sites without a remote host; opened only while such a phone is configured (docs/sip.md)"),
        Key("sip_digest", "choice", "MD5", "digest algorithms a SIP challenge offers, preferred first (docs/sip.md)",
            choices=("MD5", "SHA-256", "SHA-256,MD5", "MD5,SHA-256")),
        Key("sip_rtp_base", "int", 16384, "first UDP port for SIP calls' RTP: one even port per call, up to 1000 calls",
            min=1024, max=63000),
        Key("sip_nonce_s", "int", 300, "how long a SIP digest nonce is good for; a phone using an older one is challenged again with stale=true (docs/sip.md)",
            min=10, max=3600),
        Key("database", "database", "upbx-main.sqlite",
            'SQLite directory and call records, relative to the config file; ":memory:" for tests'),
        Key("control_socket", "path", "", "unix socket answering `upbx status`; empty for none"),
    ] + _log_keys() + [
        Key("ring_timeout_s", "int", 30, "an unanswered call is given up after this many seconds", positive=True),
        Key("registration_ttl_s", "int", 120, "lifetime of a phone's registration unless renewed", positive=True),
        Key("keepalive_timeout_s", "int", 75,
            "a remote host is logged out after this long without a new authenticated packet (its calls end "
            '"unreachable"); remote hosts send a keepalive every `keepalive_s`', positive=True),
        Key("direct_media", "bool", True, "let remote hosts exchange media directly (B2); false relays all media"),
        Key("trunk_mtu", "int", 1472, "largest trunk datagram (UDP payload bytes); more calls go in further datagrams", min=200, max=65000),
        Key("max_calls_per_host", "int", 1000,
            'most calls one remote host may be in at once through this host (and local calls granted to it); more are refused with "network busy": on a standalone main host so that no host can use up the 32,767 call numbers all share, on a cluster\'s node (each remote host has 32,767 of its own there) so that no site takes more than its share of the node\'s relay (docs/cluster.md, "Call legs per link")',
            min=1, max=16383),
        Key("conference_parties", "int", 5,
            "most parties in one conference this host mixes (CONFERENCE, docs/features.md)", min=3, max=10),
        Key("transfer_recall_s", "int", 20,
            "a blind-transferred call not answered after this many seconds rings the transferring phone again "
            "(recall, docs/features.md); 0: never", min=0, max=300),
        Key("api_listen", "hostport_or_empty", "",
            'TCP address of the JSON API and web admin page (docs/operations.md); empty for none. Plain HTTP '
            "only on loopback: elsewhere set api_certificate"),
        Key("api_certificate", "path", "", "PEM certificate chain for HTTPS on api_listen; empty for plain HTTP"),
        Key("api_private_key", "path", "", "PEM private key of api_certificate; empty when it is in that file"),
        Key("workers", "int", 0,
            "processes relaying media on the listen port, one per core (docs/relay.md); 0: one per CPU this host may "
            "use; 1: the main host alone. More than 1 needs the C fast path and an IPv4 listen address", min=0, max=256),
    ],
    "remote": [
        Key("name", "name", REQUIRED, "this remote host's name, as given to `upbx admin host add`"),
        Key("secret", "secret", REQUIRED, "hex secret printed by `upbx admin host add` (at least 16 bytes)", min_bytes=16),
        Key("main", "hostport", REQUIRED, "the main host's public address"),
        Key("listen", "hostport", "0.0.0.0:4570", "UDP address for the site's phones and for other remote hosts"),
        Key("sip_listen", "hostport", "0.0.0.0:5060",
            "UDP address for the site's SIP phones; opened only while one is configured (docs/sip.md)"),
        Key("sip_digest", "choice", "MD5", "digest algorithms a SIP challenge offers, preferred first (docs/sip.md)",
            choices=("MD5", "SHA-256", "SHA-256,MD5", "MD5,SHA-256")),
        Key("sip_rtp_base", "int", 16384, "first UDP port for SIP calls' RTP: one even port per call, up to 1000 calls",
            min=1024, max=63000),
        Key("sip_nonce_s", "int", 300, "how long a SIP digest nonce is good for; a phone using an older one is challenged again with stale=true (docs/sip.md)",
            min=10, max=3600),
        Key("keepalive_s", "int", 10, "keepalive interval towards the main host; keeps the NAT binding open and bounds how long the site is unreachable after its public address changes while idle (B7)", min=1, max=25),
        Key("uplink_kbps", "int", 0, "uplink budget for call admission; 0 for no limit", min=0),
        Key("conference_parties", "int", 5,
            "most parties in one conference this host mixes (CONFERENCE, docs/features.md)", min=3, max=10),
        Key("transfer_recall_s", "int", 20,
            "a blind-transferred call not answered after this many seconds rings the transferring phone again "
            "(recall, docs/features.md); 0: never", min=0, max=300),
        Key("records_database", "path", "upbx-remote-NAME.sqlite",
            "call records kept on disk until the main host has them; NAME is replaced by `name`"),
        Key("directory_cache", "path", "upbx-remote-NAME.cache.json",
            "last system information from the main host, for local calls while it is unreachable"),
        Key("control_socket", "path", "", "unix socket answering `upbx status`; empty for none"),
    ] + _log_keys() + [
        Key("registration_ttl_s", "int", 120, "lifetime of a phone's registration unless renewed", positive=True),
        Key("login_backoff_initial_s", "float", 1, "first wait before logging in again to the main host", positive=True),
        Key("login_backoff_max_s", "float", 30, "longest wait between login attempts (the wait doubles up to this)", positive=True),
        Key("trunk_mtu", "int", 1472, "largest trunk datagram (UDP payload bytes); more calls go in further datagrams", min=200, max=65000),
        Key("punch_timeout_s", "float", 2.0,
            "time allowed for UDP hole punching to another remote host before its calls' media stay relayed (B2)",
            positive=True),
        Key("standby", "hostports", "",
            "other main host nodes of a cluster (docs/cluster.md), used when the main host's WELCOME lists none: "
            "the first that is not `main` gets a standby session, taken over with no new login when the main "
            "host falls silent"),
        Key("main_grace_s", "float", 10,
            "the main host silent during inter-site calls: they are held this long (phones keep them, direct media "
            "flows) and go on if it answers again, else end \"main host lost\" (docs/survivability.md); 0: they end "
            "\"unreachable\" when the silence is noticed. At most 15: the session's retransmissions give up soon after",
            min=0, max=15),
        Key("rebalance_s", "int", 300,
            "on a cluster, a site not logged in at the first node of its rendezvous order (a node joined, or its "
            "first node is back after a failover) moves there, with no call at the site, between half this and this "
            "many seconds after it noticed (docs/cluster.md); 0: only at its next login", min=0, max=86400),
    ],
    "phone": [
        Key("extension", "digits", REQUIRED, "this handset's extension number"),
        Key("secret", "secret", REQUIRED, "hex secret printed by `upbx admin ext add` (at least 16 bytes)", min_bytes=16),
        Key("host", "hostport", REQUIRED, "the remote host of the site, or the main host where the site has none"),
        Key("audio_in", "audio_in", "", 'microphone: a WAV file, "tone:HZ" for a sine tone, or empty for silence'),
        Key("audio_out", "path", "", "speaker: a WAV file to write, or empty to discard"),
        Key("vad", "bool", False, "silence suppression: no voice frames in pauses, comfort noise instead"),
    ] + _log_keys()[:1],
    # a table of its own in main.toml and remote.toml (FILE_TABLES); read as config.metrics_address, ...
    "metrics": [
        Key("port", "int", 0, "TCP port of the Prometheus metrics listener (GET /metrics, plain HTTP, "
            "docs/operations.md); 0 for none", min=0, max=65535),
        Key("address", "ipaddress", "127.0.0.1",
            "address it listens on: loopback unless Prometheus scrapes from elsewhere (metrics are not secret "
            "but tell who is registered and calling); 0.0.0.0 or :: for every interface"),
    ],
    # main.toml only: the main host as a node of a cluster on PostgreSQL, Redis and etcd (docs/cluster.md);
    # read as config.cluster_node, ...; without the table (postgres empty) the main host is on its own, on SQLite
    "cluster": [
        Key("node", "name_or_empty", "", "this node's name, unique in the cluster (required with postgres)"),
        Key("postgres", "str", "", 'libpq connection string of the directory and call records, e.g. '
            '"host=db1 dbname=upbx user=upbx"; empty: no cluster, the SQLite `database` alone'),
        Key("redis", "str", "", 'Redis URL of the per-call state, e.g. "redis://db1:6379/0", or its Sentinels '
            '"redis+sentinel://s1:26379,s2:26379/SERVICE/0" (required with postgres)'),
        Key("etcd", "hostports", "", '"HOST:PORT" of etcd\'s client API, several comma-separated (required with postgres)'),
        Key("lease_s", "int", 5, "lifetime of this node's membership lease in etcd: a node that stops renewing "
            "it (killed, cut off) is gone from the cluster this long after", min=2, max=60),
        Key("call_ttl_s", "int", 3600, "a live call's Redis key expires this long after its last change unless "
            "written again (the node rewrites it at half this)", min=10, max=86400),
        Key("calls_period_ms", "int", 200, "how often the node brings its calls' Redis keys up to date (a hold, a "
            "transfer's new party); a call set up, answered or ended is written within 20 ms whatever this is",
            min=20, max=600000),
        Key("ended_ttl_s", "int", 10, "an ended call's Redis key is kept this long (a survivor taking over sees "
            "it ended)", min=1, max=3600),
        Key("etcd_return_s", "int", 30, "how often a node talking to another etcd member than the first in its "
            "order (that one did not answer) tries the ones ahead again, and moves back to the first that answers",
            min=1, max=3600),
        Key("api_wait_s", "int", 10, "how long a request to this node's JSON API or web page waits for PostgreSQL "
            "(a change, a call record export) before it is answered 503", min=1, max=300),
        Key("address", "hostport_or_empty", "", '"IPv4:PORT" where remote hosts, phones and the other nodes reach '
            "this node (in WELCOME, the system information and forwarded datagrams); empty: the listen address, "
            "which must then be a single IPv4 address, not 0.0.0.0"),
    ],
}
FILE_TABLES = {"main": ("metrics", "cluster"), "remote": ("metrics",)}   # tables a file may hold beside its own


def secret_from_hex(text, min_bytes=16):
    """Bytes of a hex secret; ValueError when it is not hex or too short."""
    if not isinstance(text, str):
        raise ValueError("expected a hex string")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError("not hex") from None
    if len(secret) < min_bytes:
        raise ValueError("%d bytes, at least %d needed" % (len(secret), min_bytes))
    return secret


def parse_hostport(text):
    """("host", port) from "HOST:PORT" (IPv4 address or name); ValueError otherwise."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise ValueError(text)
    host, port = text.split(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise ValueError(text) from None
    return host, int(port)


def _show(value):
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


class _Bad(Exception):
    """A value does not fit its key; carries what was expected."""


def _check_int(key, value, base):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("expected an integer")
    return _check_range(key, value)


def _check_float(key, value, base):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("expected a number")
    return _check_range(key, float(value))


def _check_range(key, value):
    low, high = key.limits.get("min"), key.limits.get("max")
    if high is not None and not low <= value <= high:
        raise _Bad("expected %s..%s" % (low, high))
    if key.limits.get("positive") and value <= 0:
        raise _Bad("expected a positive number")
    if low is not None and value < low:
        raise _Bad("expected a number >= %s" % low)
    return value


def _check_bool(key, value, base):
    if not isinstance(value, bool):
        raise _Bad("expected true or false")
    return value


def _check_str(key, value, base):
    if not isinstance(value, str):
        raise _Bad("expected a string")
    return value


def _check_choice(key, value, base):
    choices = key.limits["choices"]
    if value not in choices:
        raise _Bad("expected one of %s" % ", ".join(_show(c) for c in choices))
    return value


def _check_hostport(key, value, base):
    try:
        return parse_hostport(value)
    except ValueError:
        raise _Bad('expected "HOST:PORT"') from None


def _check_ipaddress(key, value, base):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Bad("expected an IPv4 or IPv6 address") from None


def _check_hostports(key, value, base):
    """"HOST:PORT,HOST:PORT" -> [("host", port), ...]; "" -> []."""
    if not isinstance(value, str):
        raise _Bad('expected "HOST:PORT" or several comma-separated')
    try:
        return [parse_hostport(part.strip()) for part in value.split(",")] if value else []
    except ValueError:
        raise _Bad('expected "HOST:PORT" or several comma-separated') from None


def _check_hostport_or_empty(key, value, base):
    return "" if value == "" else _check_hostport(key, value, base)


def is_loopback(host):
    """True for "localhost" and 127.0.0.0/8: where plain HTTP may listen."""
    if host == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def _check_path(key, value, base):
    _check_str(key, value, base)
    return os.path.join(base, value) if value else ""


def _check_database(key, value, base):
    if value == ":memory:":
        return value
    if not value:
        raise _Bad('expected a file name or ":memory:"')
    return _check_path(key, value, base)


def _check_secret(key, value, base):
    if not isinstance(value, str):
        raise _Bad("expected a hex string")
    try:
        return secret_from_hex(value, key.limits["min_bytes"])
    except ValueError as exc:
        raise _Bad("expected a hex secret of at least %d bytes (%s)" % (key.limits["min_bytes"], exc)) from None


def _check_digits(key, value, base):
    if not isinstance(value, str) or not value.isdigit() or not value.isascii() or len(value) > 15:
        raise _Bad('expected a string of digits such as "201"')
    return value


def _check_name(key, value, base):
    if not isinstance(value, str) or not _NAME.match(value):
        raise _Bad("expected a name of letters, digits, '_', '.', '-' (at most 32)")
    return value


def _check_name_or_empty(key, value, base):
    return "" if value == "" else _check_name(key, value, base)


def _check_audio_in(key, value, base):
    _check_str(key, value, base)
    if value.startswith("tone:"):
        try:
            hz = float(value[5:])
        except ValueError:
            hz = 0
        if not 0 < hz < 4000:
            raise _Bad('expected "tone:HZ" with 0 < HZ < 4000')
        return value
    return _check_path(key, value, base)


_CHECKS = {
    "bool": _check_bool, "int": _check_int, "float": _check_float, "str": _check_str, "choice": _check_choice,
    "hostport": _check_hostport, "hostport_or_empty": _check_hostport_or_empty, "hostports": _check_hostports, "ipaddress": _check_ipaddress, "path": _check_path, "database": _check_database,
    "secret": _check_secret, "digits": _check_digits, "name": _check_name, "name_or_empty": _check_name_or_empty, "audio_in": _check_audio_in,
}


class Config:
    """Loaded configuration: one attribute per key, plus `path` of the file."""

    section = None

    def __init__(self, path, values):
        self.path = str(path)
        self.warnings = []   # problems that do not stop the daemon (it logs them at start)
        self.__dict__.update(values)

    def __repr__(self):
        shown = ", ".join("%s=%r" % (k.name, "<secret>" if k.kind == "secret" else getattr(self, k.name))
                          for k in SECTIONS[self.section])
        return "%s(%s)" % (type(self).__name__, shown)


class MainConfig(Config):
    section = "main"


class RemoteConfig(Config):
    section = "remote"


class PhoneConfig(Config):
    section = "phone"


def _unknown_key(path, name, known):
    close = difflib.get_close_matches(name, known, n=1)
    hint = " (did you mean '%s'?)" % close[0] if close else ""
    return ConfigError(path, name, "unknown key%s" % hint)


def _read(path, section):
    """The TOML tables of one file ({name: table}): its section's and the others it may hold
    (FILE_TABLES); unknown sections and TOML errors raise ConfigError."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(path, None, "cannot read: %s" % (exc.strerror or exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, "not valid TOML: %s" % exc) from None
    tables = (section,) + FILE_TABLES.get(section, ())
    for name, value in doc.items():
        if name not in tables and not isinstance(value, dict):
            raise ConfigError(path, name, "outside any table; put it under [%s]" % section)
        if name not in tables:
            close = difflib.get_close_matches(name, tables, n=1)
            hint = "did you mean '%s'?" % close[0] if close else "this file takes only %s" % " and ".join(
                "[%s]" % t for t in tables)
            raise ConfigError(path, name, "unknown section (%s)" % hint)
    for name in tables:
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(path, name, "expected a table [%s]" % name)
    return {name: doc.get(name, {}) for name in tables}


def _values(path, section, table, base, prefix=""):
    """The checked values of one table's keys, defaults filled in; attribute names get prefix."""
    keys = {k.name: k for k in SECTIONS[section]}
    for name in table:
        if name not in keys:
            raise _unknown_key(path, "%s.%s" % (section, name), ["%s.%s" % (section, k) for k in keys])
    values = {}
    for key in SECTIONS[section]:
        full = "%s.%s" % (section, key.name)
        if key.name not in table:
            if key.default is REQUIRED:
                raise ConfigError(path, full, "required but missing")
            raw = key.default
        else:
            raw = table[key.name]
        if isinstance(raw, str) and "NAME" in raw and key.name not in table and "name" in values:
            raw = raw.replace("NAME", values["name"])
        try:
            values[key.name] = _CHECKS[key.kind](key, raw, base)
        except _Bad as exc:
            raise ConfigError(path, full, "%s, got %s" % (exc, _show(raw))) from None
    return {prefix + name: value for name, value in values.items()}


def _load(path, cls):
    section = cls.section
    tables = _read(path, section)
    base = os.path.dirname(os.path.abspath(path))
    values = _values(path, section, tables[section], base)
    for name in FILE_TABLES.get(section, ()):
        values.update(_values(path, name, tables[name], base, prefix=name + "_"))
    config = cls(path, values)
    if any(k.kind == "secret" for k in SECTIONS[section]):
        loose = loose_secret_file(path)
        if loose:
            config.warnings.append(loose)
    return config


def load_main_config(path):
    """MainConfig from a TOML file with a [main] table."""
    config = _load(path, MainConfig)
    if config.api_private_key and not config.api_certificate:
        raise ConfigError(path, "main.api_private_key", "set without api_certificate")
    if config.cluster_postgres:
        for key in ("node", "redis", "etcd"):
            if not getattr(config, "cluster_" + key):
                raise ConfigError(path, "cluster." + key, "required with cluster.postgres (docs/cluster.md)")
        from upbx.host.cluster.engines import redis_problem
        problem = redis_problem(config.cluster_redis)
        if problem:
            raise ConfigError(path, "cluster.redis", problem)
    else:
        for key in ("node", "redis", "etcd", "address"):
            if getattr(config, "cluster_" + key):
                raise ConfigError(path, "cluster." + key, "set without cluster.postgres: the cluster needs all of "
                                  "postgres, redis and etcd (docs/cluster.md)")
    if config.api_listen and not config.api_certificate and not is_loopback(config.api_listen[0]):
        raise ConfigError(path, "main.api_listen",
                          "plain HTTP is served on loopback only (127.0.0.1, localhost), got \"%s:%d\"; set "
                          "api_certificate (and api_private_key) for HTTPS" % config.api_listen)
    return config


def load_remote_config(path):
    """RemoteConfig from a TOML file with a [remote] table."""
    config = _load(path, RemoteConfig)
    if config.login_backoff_initial_s > config.login_backoff_max_s:
        raise ConfigError(path, "remote.login_backoff_initial_s",
                          "expected at most login_backoff_max_s (%s), got %s"
                          % (config.login_backoff_max_s, config.login_backoff_initial_s))
    return config


def load_phone_config(path):
    """PhoneConfig from a TOML file with a [phone] table."""
    return _load(path, PhoneConfig)


FILES = {"main": "main.toml", "remote": "remote.toml", "phone": "phone.toml", "metrics": "main.toml and remote.toml",
         "cluster": "main.toml"}
_KIND_NAMES = {
    "bool": "true/false", "int": "integer", "float": "number", "str": "string", "choice": "string", "hostport": '"HOST:PORT"',
    "hostport_or_empty": '"HOST:PORT" or ""', "hostports": '"HOST:PORT,..."',
    "path": "path", "database": "path", "secret": "hex string", "digits": "digits", "name": "name", "name_or_empty": "name or \"\"",
    "audio_in": "path or tone:HZ", "ipaddress": "IP address",
}


def markdown():
    """docs/config.md, generated from SECTIONS."""
    out = [
        "# Configuration",
        "",
        "<!-- generated by `python -m upbx.host.config --markdown > docs/config.md`; edit host/config.py -->",
        "",
        "Each daemon reads one TOML file with one table: `upbx main --config main.toml` reads `[main]`,",
        "`upbx remote --config remote.toml` reads `[remote]`, `upbx phone --config phone.toml` reads `[phone]`;",
        "main.toml and remote.toml may also hold a `[metrics]` table (the Prometheus listener, docs/operations.md);",
        "main.toml a `[cluster]` table (the main host as a node of a cluster, docs/cluster.md).",
        "Paths are relative to the directory of the configuration file. An unknown key, a missing",
        "required key or a value of the wrong kind stops the daemon with one line naming the file,",
        "the key and the problem, for example:",
        "",
        "    main.toml: key 'main.listen': expected \"HOST:PORT\", got 4569",
        "",
        "`HOST:PORT` takes an IPv4 address or a host name and a port 1..65535. Secrets are hex",
        "strings of at least 16 bytes, printed once by `upbx admin` (see docs/admin.md).",
    ]
    for section, keys in SECTIONS.items():
        out += ["", "## [%s] (%s)" % (section, FILES[section]), "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for key in keys:
            if key.default is REQUIRED:
                default = "required"
            else:
                default = "`%s`" % _show(key.default)
            kind = _KIND_NAMES[key.kind]
            if key.kind == "choice":
                kind = " or ".join('"%s"' % c for c in key.limits["choices"])
            elif "max" in key.limits:
                kind += " %s..%s" % (key.limits["min"], key.limits["max"])
            elif key.limits.get("positive"):
                kind += " > 0"
            elif "min" in key.limits:
                kind += " >= %s" % key.limits["min"]
            out.append("| `%s` | %s | %s | %s |" % (key.name, kind, default, key.doc))
    out += ["", "## Example", "", "```toml", "[remote]", 'name = "north"',
            'secret = "00112233445566778899aabbccddeeff"', 'main = "198.18.0.1:4569"', "uplink_kbps = 512", "",
            "[metrics]", "port = 9464", "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
    elif len(sys.argv) == 3 and sys.argv[1] in ("main", "remote", "phone"):
        loader = {"main": load_main_config, "remote": load_remote_config, "phone": load_phone_config}[sys.argv[1]]
        try:
            print(loader(sys.argv[2]))
        except ConfigError as exc:
            sys.exit(str(exc))
    else:
        sys.exit("usage: python -m upbx.host.config --markdown | {main,remote,phone} FILE")
