"""`upbx main --config FILE` and `upbx remote --config FILE`: a host core in its daemon."""
import asyncio
import sys

from host.config import ConfigError, load_main_config, load_remote_config
from host.daemon import Daemon
from host.log import StructuredLog


class MainCommand:
    """`upbx main`"""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--config", required=True, help="TOML file with a [main] table")

    @staticmethod
    def run(args):
        try:
            config = load_main_config(args.config)
        except ConfigError as exc:
            print("upbx main: %s" % exc, file=sys.stderr)
            return 2
        from host.main_host import MainHost
        core = MainHost(config, StructuredLog("main", config.log_level, config.log_format))
        asyncio.run(Daemon(core, config.listen, config.control_socket).run())
        return 0


class RemoteCommand:
    """`upbx remote`"""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--config", required=True, help="TOML file with a [remote] table")

    @staticmethod
    def run(args):
        try:
            config = load_remote_config(args.config)
        except ConfigError as exc:
            print("upbx remote: %s" % exc, file=sys.stderr)
            return 2
        from host.remote_host import RemoteHost
        core = RemoteHost(config, StructuredLog(config.name, config.log_level, config.log_format))
        asyncio.run(Daemon(core, config.listen, config.control_socket).run())
        return 0
