"""How a node reaches Redis: straight (`redis://...`) or through Sentinel (`redis+sentinel://...`).

main.toml's `[cluster] redis` is a redis-py URL (`redis://HOST:PORT/DB`), or, for a Redis with a
replica that Sentinel promotes when the primary is lost (docs/cluster.md "Engine failover"):

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]

the Sentinels' addresses and the name they monitor the primary under (`sentinel monitor SERVICE`).
The client is redis-py's asyncio Sentinel (`redis.asyncio.sentinel`): each new connection asks a
Sentinel where the primary is, and a connection to a primary that is one no more fails (READONLY,
or its server gone), so the node's writer connects again, to the new primary, and rewrites every
live call's key (host/cluster/node.py).
"""
from urllib.parse import unquote

SCHEME = "redis+sentinel://"


def parse_sentinel(url):
    """(sentinels [(host, port)], service, db, password) of a redis+sentinel:// URL; ValueError saying
    what is wrong."""
    rest = url[len(SCHEME):]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1] if ":" in auth else auth) or None
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("%s needs /SERVICE[/DB] after the Sentinels, got %r" % (SCHEME, url))
    service = parts[0]
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError("the database of %r is not a number" % url) from None
    sentinels = []
    for hostport in hosts.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("a Sentinel of %r is not HOST:PORT: %r" % (url, hostport))
        sentinels.append((host, int(port)))
    return sentinels, service, db, password


def redis_problem(url):
    """Why `url` is not a Redis URL a node can use (a sentence), or None."""
    if url.startswith(SCHEME):
        try:
            parse_sentinel(url)
        except ValueError as exc:
            return str(exc)
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "expected redis://HOST:PORT/DB, rediss://..., unix://... or %sHOST:PORT,.../SERVICE/DB, got %r" % (
            SCHEME, url)
    return None


def redis_client(url, timeout_s=5):
    """A redis.asyncio client for `url`: plain, or the primary that Sentinel names."""
    import redis.asyncio as redis
    if not url.startswith(SCHEME):
        return redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    from redis.asyncio.sentinel import Sentinel
    sentinels, service, db, password = parse_sentinel(url)
    sentinel = Sentinel(sentinels, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return sentinel.master_for(service, db=db, password=password, socket_timeout=timeout_s,
                               socket_connect_timeout=timeout_s)
