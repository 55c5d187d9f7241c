"""Private PostgreSQL, Redis and etcd servers for the cluster's tests and demos (docs/cluster.md).

Each engine is the Debian package's own binary, started on free loopback ports in a
temporary directory that is removed again; nothing of the machine's own services is used
or changed. PostgreSQL refuses to run as root, so as root its initdb and postgres run as
the `postgres` user the package created (runuser). `Engines` stops everything it started
in close() (also when a test fails; it is a context manager), and an engine that cannot
start raises EngineError with the last lines of its log.
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from upbx.tools.lab import ROOT, LoopbackExchange, free_port, free_tcp_port, upbx
from upbx.tools.netlab_exchange import MAIN_PORT as NETLAB_MAIN_PORT, REMOTE_PORT as NETLAB_REMOTE_PORT, NetlabExchange

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))   # Debian's postgresql-NN, newest last


class EngineError(RuntimeError):
    """An engine could not be started; the message says which and why."""


def missing():
    """Why the engines cannot run here (a sentence), or None."""
    if not PG_BIN or not os.path.exists(os.path.join(PG_BIN[-1], "initdb")):
        return "PostgreSQL is not installed (Debian package postgresql)"
    for binary, package in (("redis-server", "redis-server"), ("etcd", "etcd-server")):
        if shutil.which(binary) is None:
            return "%s is not installed (Debian package %s)" % (binary, package)
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    try:
        import aetcd  # noqa: F401
        import psycopg  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return "the cluster extra is not installed (pip install 'upbx[cluster]'): %s" % exc
    return None


def _as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


def _tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Engines:
    """PostgreSQL, Redis and etcd on loopback, each in a directory of its own under one temp dir."""

    def __init__(self, start_timeout=60):
        self.dir = tempfile.mkdtemp(prefix="upbx-engines-")
        os.chmod(self.dir, 0o755)   # the postgres user walks into its own sub-directory
        self.procs = {}             # engine name -> Popen
        self.timeout = start_timeout
        self.pg_port = self.redis_port = self.etcd_port = None

    # the addresses main.toml's [cluster] takes

    @property
    def postgres_dsn(self):
        return "host=127.0.0.1 port=%d user=upbx dbname=upbx connect_timeout=5" % self.pg_port

    @property
    def redis_url(self):
        return "redis://127.0.0.1:%d/0" % self.redis_port

    @property
    def etcd_endpoint(self):
        return "127.0.0.1:%d" % self.etcd_port

    def cluster_table(self, node, etcd=None):
        """The [cluster] table of a node's main.toml (etcd: another `etcd` than these engines' own)."""
        return ('[cluster]\nnode = "%s"\npostgres = "%s"\nredis = "%s"\netcd = "%s"\n'
                % (node, self.postgres_dsn, self.redis_url, etcd or self.etcd_endpoint))

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def _spawn(self, name, argv):
        log = open(self.path(name + ".log"), "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.dir)
        log.close()
        self.procs[name] = proc
        return proc

    def _wait(self, name, ready):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise EngineError("%s exited (status %s): %s" % (name, self.procs[name].returncode, self.log_tail(name)))
            if ready():
                return
            time.sleep(0.05)
        raise EngineError("%s did not start within %d s: %s" % (name, self.timeout, self.log_tail(name)))

    def log_tail(self, name, lines=6):
        try:
            with open(self.path(name + ".log"), "rb") as f:
                return " | ".join(f.read().decode("utf-8", "replace").strip().splitlines()[-lines:])
        except OSError as exc:
            return "(no log: %s)" % exc

    def start(self):
        """Start all three (PostgreSQL's initdb first, the others meanwhile); returns self."""
        problem = missing()
        if problem:
            raise EngineError(problem)
        try:
            self._start_redis()
            self._start_etcd()
            self._init_postgres()
            self.start_postgres()
            self._wait("redis", lambda: _tcp_open(self.redis_port))
            self._wait("etcd", lambda: _tcp_open(self.etcd_port))
        except BaseException:
            self.close()
            raise
        return self

    def _start_redis(self):
        self.redis_port = free_tcp_port()
        os.mkdir(self.path("redis"))
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", self.path("redis")])

    def _start_etcd(self):
        if self.etcd_port is None:
            self.etcd_port, self._etcd_peer = free_tcp_port(), free_tcp_port()
        client, peer_url = "http://127.0.0.1:%d" % self.etcd_port, "http://127.0.0.1:%d" % self._etcd_peer
        self._spawn("etcd", ["etcd", "--name", "lab", "--data-dir", self.path("etcd"),
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                             "--initial-cluster", "lab=" + peer_url, "--log-level", "warn"])

    def _init_postgres(self):
        data = self.path("postgres")
        os.mkdir(data, 0o700)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        # C locale: names sort by bytes, as SQLite sorts them; trust on loopback only (a lab)
        out = subprocess.run(_as_postgres([os.path.join(PG_BIN[-1], "initdb"), "-D", data, "-U", "upbx",
                                           "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"]),
                             capture_output=True, text=True, cwd=self.dir)
        if out.returncode:
            raise EngineError("initdb failed: %s" % (out.stderr or out.stdout).strip()[-400:])
        self.pg_port = free_tcp_port()

    def start_postgres(self):
        """Start (or start again after stop_postgres) the PostgreSQL server; waits until it answers."""
        data = self.path("postgres")
        self._spawn("postgres", _as_postgres([os.path.join(PG_BIN[-1], "postgres"), "-D", data,
                                              "-p", str(self.pg_port), "-c", "listen_addresses=127.0.0.1",
                                              "-c", "unix_socket_directories=" + data, "-c", "fsync=off",
                                              "-c", "full_page_writes=off"]))
        self._wait("postgres", self._pg_ready)
        if not getattr(self, "_created", False):
            import psycopg
            with psycopg.connect(self.postgres_dsn.replace("dbname=upbx", "dbname=postgres"),
                                 autocommit=True) as conn:
                conn.execute("CREATE DATABASE upbx")
            self._created = True

    def restart_etcd(self):
        """Stop etcd and start it again on its data (its leases are kept, their time restarted)."""
        self._stop("etcd")
        self._start_etcd()
        self._wait("etcd", lambda: _tcp_open(self.etcd_port))

    def _pg_ready(self):
        out = subprocess.run([os.path.join(PG_BIN[-1], "pg_isready"), "-q", "-h", "127.0.0.1",
                              "-p", str(self.pg_port)], capture_output=True)
        return out.returncode == 0

    def stop_postgres(self):
        """Stop PostgreSQL the way an operator restarting it would (fast shutdown: commits are kept)."""
        self._stop("postgres", signal.SIGINT)

    def _postgres_processes(self):
        """The postmaster (runuser's child) and its children (each backend is a session of its own)."""
        parent = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        runuser = self.procs["postgres"].pid
        top = [pid for pid, ppid in parent.items() if ppid == runuser] or [runuser]
        return top + [pid for pid, ppid in parent.items() if ppid in top]

    def pause_postgres(self, sig=signal.SIGSTOP):
        """PostgreSQL hung (SIGSTOP of its postmaster and every backend): queries wait, connections stay
        open; resume_postgres() lets them go on."""
        for pid in self._postgres_processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def resume_postgres(self):
        self.pause_postgres(signal.SIGCONT)

    def _stop(self, name, sig=signal.SIGTERM):
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    def close(self):
        for name in list(self.procs):
            self._stop(name, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


PATRONI_TTL_S = 10   # the leader key's lease: a primary lost is replaced about this long after (Patroni's ttl)


def missing_replicated():
    """Why ReplicatedEngines cannot run here (a sentence), or None."""
    problem = missing()
    if problem:
        return problem
    if shutil.which("patroni") is None:
        return "patroni is not installed (Debian package patroni)"
    return None


def _kill_server(data_dir):
    """kill -9 of the PostgreSQL server on data_dir (its postmaster.pid) and of its process group (Patroni
    starts it in a session of its own: the backends are in it); nothing if it is not running."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            pid = int(f.readline())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"postgres" not in f.read():
                return   # a stale file: that pid is another process now
        group = os.getpgid(pid)
    except (OSError, ValueError):
        return
    try:
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ReplicatedEngines(Engines):
    """Engines whose PostgreSQL and Redis fail over (docs/cluster.md "Engine failover"):

    - PostgreSQL: two members run by Patroni (Debian's patroni) with this etcd as its DCS, streaming
      replication in Patroni's synchronous mode (a commit is on both before it is acknowledged, so a
      failover loses no record a node acknowledged). The nodes' connection string names both
      (`host=127.0.0.1,127.0.0.1 port=P0,P1 target_session_attrs=read-write`): libpq finds the primary.
    - Redis: a primary, a replica and Sentinel watching them; the nodes' URL names Sentinel
      (`redis+sentinel://127.0.0.1:S/upbx/0`, host/cluster/engines.py).

    kill_postgres_primary() and kill_redis_primary() lose a primary as a machine would (kill -9, its
    server processes and its Patroni)."""

    MEMBERS = ("pg0", "pg1")
    SERVICE = "upbx"

    def __init__(self, start_timeout=90):
        Engines.__init__(self, start_timeout)
        self.pg_ports = {}
        self.rest_ports = {}

    @property
    def postgres_dsn(self):
        ports = [self.pg_ports[m] for m in self.MEMBERS]
        return ("host=%s port=%s user=upbx dbname=upbx connect_timeout=5 target_session_attrs=read-write"
                % (",".join("127.0.0.1" for _ in ports), ",".join(str(p) for p in ports)))

    def member_dsn(self, member, dbname="upbx"):
        return "host=127.0.0.1 port=%d user=upbx dbname=%s connect_timeout=2" % (self.pg_ports[member], dbname)

    @property
    def redis_url(self):
        return "redis+sentinel://127.0.0.1:%d/%s/0" % (self.sentinel_port, self.SERVICE)

    def start(self):
        problem = missing_replicated()
        if problem:
            raise EngineError(problem)
        try:
            self._start_redis()
            self._start_etcd()
            self._wait("etcd", lambda: _tcp_open(self.etcd_port))
            self._wait("redis", lambda: _tcp_open(self.redis_port))
            self._start_redis_replica()
            for member in self.MEMBERS:
                self._start_member(member)
                if member == self.MEMBERS[0]:   # the first bootstraps (initdb) and leads, the second copies it
                    self._wait("patroni-" + member, lambda: self.postgres_primary() == member)
            self._wait("patroni-" + self.MEMBERS[1], self.synchronous)
            import psycopg
            with psycopg.connect(self.postgres_dsn.replace("dbname=upbx", "dbname=postgres"), autocommit=True) as c:
                c.execute("CREATE DATABASE upbx")
        except BaseException:
            self.close()
            raise
        return self

    def _start_redis_replica(self):
        self.redis_replica_port, self.sentinel_port = free_tcp_port(), free_tcp_port()
        os.mkdir(self.path("redis-replica"))
        self._spawn("redis-replica", ["redis-server", "--port", str(self.redis_replica_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", self.path("redis-replica"),
                                      "--replicaof", "127.0.0.1", str(self.redis_port)])
        os.mkdir(self.path("sentinel"))
        with open(self.path("sentinel", "sentinel.conf"), "w") as f:   # Sentinel rewrites its file
            f.write("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n"
                    % (self.sentinel_port, self.path("sentinel"), self.SERVICE, self.redis_port, self.SERVICE,
                       self.SERVICE))
        self._spawn("sentinel", ["redis-server", self.path("sentinel", "sentinel.conf"), "--sentinel"])
        self._wait("redis-replica", lambda: self._redis_role(self.redis_replica_port) == "slave-up")
        self._wait("sentinel", lambda: self.redis_primary() == self.redis_port)

    def _redis_role(self, port):
        import redis
        try:
            with redis.Redis(port=port, socket_timeout=1) as r:
                info = r.info("replication")
        except redis.RedisError:
            return None
        if info["role"] == "master":
            return "master"
        return "slave-up" if info.get("master_link_status") == "up" else "slave"

    def redis_primary(self):
        """The port Sentinel names as Redis's primary now, or None."""
        import redis
        try:
            with redis.Redis(port=self.sentinel_port, socket_timeout=1) as r:
                master = r.sentinel_get_master_addr_by_name(self.SERVICE)
        except (redis.RedisError, OSError):
            return None
        return int(master[1]) if master else None

    def kill_redis_primary(self):
        """kill -9 of Redis's primary (the one Sentinel names); returns its port."""
        port = self.redis_primary()
        name = "redis" if port == self.redis_port else "redis-replica"
        self._stop(name, signal.SIGKILL)
        return port

    def _start_member(self, member):
        self.pg_ports[member], self.rest_ports[member] = free_tcp_port(), free_tcp_port()
        data = self.path(member)
        os.mkdir(data, 0o700)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        config = {
            "scope": "upbx-lab", "namespace": "/patroni/", "name": member,
            "restapi": {"listen": "127.0.0.1:%d" % self.rest_ports[member],
                        "connect_address": "127.0.0.1:%d" % self.rest_ports[member]},
            "etcd3": {"hosts": ["127.0.0.1:%d" % self.etcd_port]},
            "bootstrap": {
                "dcs": {"ttl": PATRONI_TTL_S, "loop_wait": 1, "retry_timeout": 4, "synchronous_mode": True,
                        "maximum_lag_on_failover": 1 << 20,
                        "postgresql": {"use_pg_rewind": False,
                                       "parameters": {"fsync": "off", "full_page_writes": "off",
                                                      "wal_level": "replica", "hot_standby": "on",
                                                      "max_wal_senders": 5, "max_replication_slots": 5}}},
                "initdb": [{"encoding": "UTF8"}, "no-locale", "no-sync"],
            },
            "postgresql": {
                "listen": "127.0.0.1:%d" % self.pg_ports[member],
                "connect_address": "127.0.0.1:%d" % self.pg_ports[member],
                "data_dir": os.path.join(data, "data"), "bin_dir": PG_BIN[-1],
                "pgpass": os.path.join(data, "pgpass"),
                "authentication": {"superuser": {"username": "upbx"}, "replication": {"username": "upbx"}},
                "parameters": {"unix_socket_directories": data},
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "host replication all 127.0.0.1/32 trust"],
            },
            "tags": {},
        }
        path = os.path.join(data, "patroni.yml")
        with open(path, "w") as f:
            json.dump(config, f)   # YAML is a superset of JSON
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        self._spawn("patroni-" + member, _as_postgres(["patroni", path]))

    def _member_role(self, member):
        """"primary", "replica" or None (not answering) of one member, from its own server."""
        import psycopg
        try:
            with psycopg.connect(self.member_dsn(member, "postgres"), autocommit=True) as conn:
                return "replica" if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] else "primary"
        except psycopg.Error:
            return None

    def postgres_primary(self):
        """The member whose server is PostgreSQL's primary now, or None."""
        for member in self.MEMBERS:
            if member in self.pg_ports and self._member_role(member) == "primary":
                return member
        return None

    def synchronous(self):
        """Whether the primary has a synchronous standby streaming (a commit waits for it)."""
        import psycopg
        primary = self.postgres_primary()
        if primary is None:
            return False
        try:
            with psycopg.connect(self.member_dsn(primary, "postgres"), autocommit=True) as conn:
                return any(r[0] == "sync" for r in conn.execute("SELECT sync_state FROM pg_stat_replication"))
        except psycopg.Error:
            return False

    def kill_member(self, member):
        """A member lost as a machine is: kill -9 of its Patroni and of its PostgreSQL server (which Patroni
        started in a session of its own)."""
        self._stop("patroni-" + member, signal.SIGKILL)
        _kill_server(os.path.join(self.path(member), "data"))

    def kill_postgres_primary(self):
        """kill -9 of the primary member; returns its name."""
        member = self.postgres_primary()
        self.kill_member(member)
        return member

    def stop_postgres(self):
        raise NotImplementedError("ReplicatedEngines: kill_postgres_primary() (Patroni restarts a server stopped alone)")

    def close(self):
        for name in list(self.procs):
            self._stop(name, signal.SIGTERM)
        for member in self.MEMBERS:   # Patroni stopped (or killed): its server may still run
            _kill_server(os.path.join(self.path(member), "data"))
        shutil.rmtree(self.dir, ignore_errors=True)


STAY = {"rebalance_s": 0}


def _staying(args):
    """A phone's arguments: it stays at the node the test puts it at (a test of a phone's move to its first
    node, docs/cluster.md, gives --rebalance itself)."""
    return args if "--rebalance" in args else ("--rebalance", "0") + tuple(args)


class ClusterExchange(LoopbackExchange):
    """Main host nodes (processes) on one set of Engines, with LoopbackExchange's phones and helpers:
    `upbx admin` goes to the cluster's PostgreSQL through the first node's main.toml."""

    def __init__(self, engines, nodes=("n1", "n2"), standby=False, home=None, node_settings=None,
                 cluster_settings=None, **kwargs):
        """standby: each remote host's `standby` lists the other nodes (its standby session goes to the
        second node, docs/cluster.md Failover). home: the node the remote hosts and the phones of sites
        without one log in to (the first node when None). node_settings: {node: {key: value}}, [main]
        keys of one node (main_settings: of every node); cluster_settings: more [cluster] keys."""
        LoopbackExchange.__init__(self, **kwargs)
        # each site stays at the node the test names (home): a test of a site's move to the first node of its
        # rendezvous order (docs/cluster.md) sets rebalance_s
        self.remote_settings = dict(STAY, **self.remote_settings)
        self.node_settings = node_settings or {}
        self.cluster_settings = cluster_settings or {}
        self.engines = engines
        self.standby = standby
        self.nodes = list(nodes)
        self.home = home or self.nodes[0]
        self.node_ports = {node: free_port() for node in self.nodes}
        self.main_port = self.node_ports[self.home]   # phones of sites without a remote host: the home node
        for node in self.nodes:
            self._write_config(node)

    def phone(self, number, *args, tag=None):
        return LoopbackExchange.phone(self, number, *_staying(args), tag=tag)

    def _write_config(self, node):
        with open(self.path(node + ".toml"), "w") as f:
            f.write('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "%s.sqlite"\ncontrol_socket = "%s"\nlog_level = "%s"\n'
                    'workers = 1\ndirect_media = %s\n'
                    % (self.node_ports[node], node, self.path(node + ".sock"), self.log_level,
                       "true" if self.direct_media else "false"))
            for key, value in dict(self.main_settings, **self.node_settings.get(node, {})).items():
                f.write("%s = %s\n" % (key, json.dumps(value)))
            f.write("\n" + self.engines.cluster_table(node, self.cluster_settings.get("etcd")))
            for key, value in self.cluster_settings.items():
                if key != "etcd":
                    f.write("%s = %s\n" % (key, json.dumps(value)))

    def provision(self, sites=("a", "b", "c"), remote_sites=("a", "b"), phones=None):
        """LoopbackExchange.provision straight into PostgreSQL (the Directory `upbx admin` uses, without a
        process per row: a busy machine starts each in seconds)."""
        from upbx.host.cluster.postgres import PostgresDirectory
        phones = phones or {"a": ["101", "102"], "b": ["201", "202"], "c": ["301", "302"]}
        with PostgresDirectory(self.engines.postgres_dsn) as directory:
            for site in sites:
                directory.add_site(site)
                if site in remote_sites:
                    self.secrets["site-" + site] = directory.add_remote_host("site-" + site, site).hex()
                for number in phones.get(site, []):
                    self.secrets[number] = directory.add_extension(number, site, "Phone " + number).hex()
        self.phone_site = {n: s for s, ns in phones.items() for n in ns}
        self.remote_sites = remote_sites

    def admin(self, *args):
        out = subprocess.run(upbx("admin", "--config", self.path(self.nodes[0] + ".toml"), *args), cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError("upbx admin %s: %s" % (" ".join(args), out.stderr.strip()))
        return out.stdout.strip()

    def status(self, daemon):
        """A daemon's status; "main" is the home node (where phones of sites without a remote host go)."""
        return LoopbackExchange.status(self, self.home if daemon == "main" else daemon)

    def cluster_status(self):
        out = subprocess.run(upbx("cluster", "status", "--config", self.path(self.nodes[0] + ".toml"), "--json"),
                             cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def start_node(self, node, wait=True):
        """Start a node (again, after kill(node): the one killed is forgotten, it is no longer watched)."""
        self.procs = [p for p in self.procs if p.upbx_name != node or p.poll() is None]
        proc = self.spawn(node, upbx("main", "--config", self.path(node + ".toml")))
        if wait:
            self.wait_for(lambda: self.status(node)["pid"] == proc.pid, "node %s started" % node, timeout=60,
                          watch=(node,))
        return proc

    def start(self, one_by_one=False):
        """Every node, then the remote hosts of provision()'s sites, logged in to the home node.
        one_by_one: each node started once the one before runs (on a new etcd: node numbers 1, 2, ...
        in the order of `nodes`), else all at once."""
        for node in self.nodes:
            self.start_node(node, wait=one_by_one)
        for node in self.nodes:
            self.wait_for(lambda: self.status(node)["cluster"]["engines"]["etcd"] == "up", "node %s joined" % node,
                          timeout=60, watch=(node,))
        # and every node knows every other one (its trunk session to it up): a client that logs in before
        # would be told a cluster short of a node, and choose its standby among those it was told
        # (the lab's own nodes: engines shared with another lab may list more)
        ids = {n: str(self.status(n)["cluster"]["node_id"]) for n in self.nodes}

        def meshed():
            for n in self.nodes:
                trunks = self.status(n)["cluster"]["trunks"] or {}
                if any(trunks.get(ids[m], {}).get("state") != "up" for m in self.nodes if m != n):
                    return False
            return True
        self.wait_for(meshed, "trunk sessions between the nodes up", timeout=60, watch=tuple(self.nodes))
        for site in getattr(self, "remote_sites", ()):
            port = self.remote_ports[site] = free_port()
            name = "site-" + site
            with open(self.path(name + ".toml"), "w") as f:
                f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "127.0.0.1:%d"\nlisten = "127.0.0.1:%d"\n'
                        'control_socket = "%s"\nlog_level = "%s"\n'
                        % (name, self.secrets[name], self.main_port, port, self.path(name + ".sock"), self.log_level))
                if self.standby:
                    f.write('standby = "%s"\n' % ",".join("127.0.0.1:%d" % self.node_ports[n] for n in self.nodes
                                                           if n != self.home))
                for key, value in self.remote_settings.items():
                    f.write("%s = %s\n" % (key, json.dumps(value)))
            self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")))
        self.wait_for(lambda: all(self.status("site-" + s)["main"]["state"] == "up"
                                  for s in getattr(self, "remote_sites", ())),
                      "remote hosts logged in", timeout=60, watch=tuple(self.nodes))


def engines_in(lab, node="main"):
    """Engines started inside a network lab node's namespace (on its loopback): the nodes running
    there reach them, nothing else does. Started from this thread while it is in the namespace, so
    every engine's process is in it too; stopping them (signals) works from anywhere."""
    with lab.inside(node):
        return Engines().start()


class ClusterNetlabExchange(NetlabExchange):
    """A cluster inside the network lab (tools/netlab.py, docs/netlab.md): the nodes run in the lab's
    `main` namespace, each on an Internet address of its own (198.18.0.11, .12, ... port 4569), the
    engines on that namespace's loopback (engines_in), the remote hosts and phones in their sites'
    namespaces behind the NAT routers. Each remote host logs in to the first node and lists the
    others as `standby` (docs/cluster.md, Failover)."""

    def __init__(self, lab, engines, nodes=("n1", "n2", "n3"), **kwargs):
        NetlabExchange.__init__(self, lab, **kwargs)
        self.remote_settings = dict(STAY, **self.remote_settings)   # as ClusterExchange's
        self.engines = engines
        self.nodes = list(nodes)
        self.node_addresses = {node: ("198.18.0.%d" % (11 + i), NETLAB_MAIN_PORT) for i, node in enumerate(self.nodes)}
        self.main_ip = self.node_addresses[self.nodes[0]][0]   # phones of sites without a remote host

    def phone(self, number, *args, tag=None):
        return NetlabExchange.phone(self, number, *_staying(args), tag=tag)

    def provision(self, sites=("a", "b", "c"), remote_sites=("a", "b"), phones=None):
        with self.lab.inside("main"):
            ClusterExchange.provision(self, sites, remote_sites, phones)

    def admin(self, *args):
        out = self.lab.exec("main", upbx("admin", "--config", self.path(self.nodes[0] + ".toml"), *args), cwd=ROOT,
                            capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError("upbx admin %s: %s" % (" ".join(args), out.stderr.strip()))
        return out.stdout.strip()

    def status(self, daemon):
        return NetlabExchange.status(self, self.nodes[0] if daemon == "main" else daemon)

    def cluster_status(self):
        out = self.lab.exec("main", upbx("cluster", "status", "--config", self.path(self.nodes[0] + ".toml"),
                                         "--json"), cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def start(self):
        ns = self.lab.netns("main")
        for node, (ip, port) in self.node_addresses.items():
            subprocess.run(["ip", "-n", ns, "addr", "replace", ip + "/16", "dev", "eth0"], check=True)
            with open(self.path(node + ".toml"), "w") as f:
                f.write('[main]\nlisten = "%s:%d"\ndatabase = "%s.sqlite"\ncontrol_socket = "%s"\nlog_level = "%s"\n'
                        'workers = 1\ndirect_media = %s\nring_timeout_s = %d\n\n%s'
                        % (ip, port, node, self.path(node + ".sock"), self.log_level,
                           "true" if self.direct_media else "false", self.ring_timeout_s,
                           self.engines.cluster_table(node)))
            self.spawn(node, upbx("main", "--config", self.path(node + ".toml")), node="main")
        for node in self.nodes:
            self.wait_for(lambda: self.status(node)["cluster"]["engines"]["etcd"] == "up", "node %s joined" % node,
                          timeout=90, watch=(node,))
        standby = ",".join("%s:%d" % self.node_addresses[n] for n in self.nodes[1:])
        for site in self.remote_sites:
            self.remote_ports[site] = NETLAB_REMOTE_PORT
            name = "site-" + site
            with open(self.path(name + ".toml"), "w") as f:
                f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "%s:%d"\nstandby = "%s"\nlisten = "%s:%d"\n'
                        'control_socket = "%s"\nlog_level = "%s"\nkeepalive_s = %d\npunch_timeout_s = %s\n'
                        % (name, self.secrets[name], self.main_ip, NETLAB_MAIN_PORT, standby, self.remote_ip(site),
                           NETLAB_REMOTE_PORT, self.path(name + ".sock"), self.log_level, self.keepalive_s,
                           self.punch_timeout_ms / 1000))
                for key, value in self.remote_settings.items():
                    f.write("%s = %s\n" % (key, json.dumps(value)))
            self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")), node="site-%s/remote" % site)
        self.wait_for(lambda: all(self.status("site-" + s)["main"]["state"] == "up" for s in self.remote_sites),
                      "remote hosts logged in", timeout=60, watch=tuple(self.nodes))
