"""`upbx remote --config FILE`: run a remote host daemon."""
import asyncio
import sys

from host.config import ConfigError, load_remote_config


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="TOML file with a [remote] table")
    parser.add_argument("--punch-timeout-ms", type=int, default=2000,
                        help="time allowed for a direct path before media stays relayed")


def run(args):
    try:
        config = load_remote_config(args.config)
    except ConfigError as exc:
        print("upbx remote: %s" % exc, file=sys.stderr)
        return 2
    from host.remote import RemoteHost
    asyncio.run(RemoteHost(config, args.punch_timeout_ms).run())
    return 0
