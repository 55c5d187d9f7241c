"""`upbx main --config FILE` and `upbx remote --config FILE`: a host core in its daemon."""
import asyncio
import importlib
import sys

from upbx.host.config import ConfigError, load_main_config, load_remote_config
from upbx.host.daemon import Daemon
from upbx.host.log import StructuredLog


class HostCommand:
    """One of the two daemons: its configuration table and the core it runs."""

    def __init__(self, table, load, core):
        self.table = table      # "main" or "remote"
        self.load = load
        self.core = core        # "module:Class"

    def add_arguments(self, parser):
        parser.add_argument("--config", required=True, help="TOML file with a [%s] table" % self.table)

    def run(self, args):
        try:
            config = self.load(args.config)
        except ConfigError as exc:
            print("upbx %s: %s" % (self.table, exc), file=sys.stderr)
            return 2
        module, _, name = self.core.partition(":")
        core_class = getattr(importlib.import_module(module), name)
        log_name = "main" if self.table == "main" else config.name
        core = core_class(config, StructuredLog(log_name, config.log_level, config.log_format))
        asyncio.run(Daemon(core, config.listen, config.control_socket, getattr(config, "workers", 1)).run())
        return 0


MainCommand = HostCommand("main", load_main_config, "upbx.host.main_host:MainHost")
RemoteCommand = HostCommand("remote", load_remote_config, "upbx.host.remote_host:RemoteHost")
