"""`upbx main --config FILE` and `upbx remote --config FILE`: a host core in its daemon."""
import asyncio
import importlib
import sys

from upbx.host.config import ConfigError, load_main_config, load_remote_config
from upbx.host import metrics
from upbx.host.daemon import Daemon, ListenError, ServiceError
from upbx.host.log import StructuredLog


class HostCommand:
    """One of the two daemons: its configuration table and the core it runs."""

    def __init__(self, table, load, core, services=None):
        self.table = table      # "main" or "remote"
        self.load = load
        self.core = core        # "module:Class"
        self.services = services   # "module:function": config -> services the daemon runs (host/api.py)

    def add_arguments(self, parser):
        parser.add_argument("--config", required=True, help="TOML file with a [%s] table" % self.table)

    def run(self, args):
        try:
            config = self.load(args.config)
            services = _load(self.services)(config) if self.services else []
        except ConfigError as exc:
            print("upbx %s: %s" % (self.table, exc), file=sys.stderr)
            return 2
        if config.metrics_port:
            problem = metrics.missing()
            if problem:
                print("upbx %s: %s: key 'metrics.port': %s" % (self.table, config.path, problem), file=sys.stderr)
                return 2
            services.append(metrics.MetricsService((config.metrics_address, config.metrics_port)))
        core_class = _load(self.core)
        log_name = "main" if self.table == "main" else config.name
        try:
            core = core_class(config, StructuredLog(log_name, config.log_level, config.log_format))
        except ServiceError as exc:   # a cluster node that cannot join (etcd unreachable, host/cluster/node.py)
            print("upbx %s: %s" % (self.table, exc), file=sys.stderr)
            return 1
        try:
            asyncio.run(Daemon(core, config.listen, config.control_socket, services,
                               workers=getattr(config, "workers", 1)).run())
        except ServiceError as exc:
            print("upbx %s: %s" % (self.table, exc), file=sys.stderr)
            return 1
        except ListenError as exc:   # another process has the port (a second daemon, an old one still running)
            print("upbx %s: %s: key '%s.listen': %s" % (self.table, config.path, self.table, exc), file=sys.stderr)
            return 1
        return 0


def _load(where):
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


def api_services(config):
    """The JSON API and web page beside the main host's core, when main.toml sets api_listen (aiohttp is
    imported only then: the 'web' extra); the cluster's tasks when it has a [cluster] table (docs/cluster.md)."""
    services = []
    if config.cluster_postgres:
        from upbx.host.cluster.node import ClusterService
        services.append(ClusterService(config))
        from upbx.host.cluster.trunk import LocationService   # where each client is: calls between nodes
        services.append(LocationService(config))
    if config.api_listen:
        from upbx.host.api import ApiService
        services.append(ApiService(config))
    return services


MainCommand = HostCommand("main", load_main_config, "upbx.host.main_host:MainHost", "upbx.host.cli:api_services")
RemoteCommand = HostCommand("remote", load_remote_config, "upbx.host.remote_host:RemoteHost")
