"""`upbx main --config FILE`: run the main host daemon."""
import asyncio
import sys

from host.config import ConfigError, load_main_config


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="TOML file with a [main] table")


def run(args):
    try:
        config = load_main_config(args.config)
    except ConfigError as exc:
        print("upbx main: %s" % exc, file=sys.stderr)
        return 2
    from host.main import MainHost
    asyncio.run(MainHost(config).run())
    return 0
