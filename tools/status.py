"""`upbx status`: ask a running daemon (main or remote host) what it is doing, over its control socket.

Text output is a few readable tables; `--json` prints the daemon's answer as one object.
The socket comes from --socket, or from the control_socket key of the daemon's config file.
"""
import json
import sys

from upbx.host.config import ConfigError, load_main_config, load_remote_config
from upbx.host.daemon import query_status


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the daemon's control socket")
    where.add_argument("--config", help="the daemon's TOML file ([main] or [remote]); its control_socket is asked")


def socket_of(config_path):
    """The control socket named by a main or remote host's config file; ConfigError if it has none."""
    try:
        config = load_main_config(config_path)
    except ConfigError as first:
        try:
            config = load_remote_config(config_path)
        except ConfigError as exc:
            raise (first if "unknown section" in str(exc) else exc) from None
    if not config.control_socket:
        section = "main" if hasattr(config, "database") else "remote"
        raise ConfigError(config_path, section + ".control_socket", "empty: this daemon answers no status")
    return config.control_socket


def table(title, columns, rows):
    """A titled text table; an empty one says so."""
    lines = [title]
    if not rows:
        return lines + ["  (none)"]
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return lines


def render(status):
    """The text form of a status answer (main or remote host)."""
    lines = ["%s (pid %s)" % (status.get("name"), status.get("pid"))]
    if "main" in status:
        main = status["main"]
        lines.append("main host: %s (logins %s)" % (main.get("state"), main.get("logins")))
    uplink = status.get("uplink")
    if uplink:
        budget = uplink["budget_kbps"] or "unlimited"
        lines.append("uplink: %s calls, %s kbps committed of %s" % (uplink["calls"], uplink["committed_kbps"], budget))
    lines.append("")
    if "remote_hosts" in status:
        lines += table("remote hosts", ("name", "site", "public address"),
                       [(h["name"], h.get("site"), h["address"]) for h in status["remote_hosts"]])
    if "pairs" in status:
        lines += table("direct paths", ("peer", "up", "address"),
                       [(n, "yes" if p["up"] else "no", p["address"]) for n, p in sorted(status["pairs"].items())])
    lines += table("phones", ("extension", "address"),
                   [(p["extension"], p["address"]) for p in status.get("phones", [])])
    lines += table("calls", ("call", "caller", "callee", "state", "path", "frames"),
                   [(c["call"][:8], c["caller"], c["callee"], c["state"], c["path"], c["frames"])
                    for c in status.get("calls", [])])
    lines += table("bandwidth (kbps, 1 s window, IPv4+UDP included)", ("peer", "in", "out", "peak in", "peak out"),
                   [(name, b["in_kbps"], b["out_kbps"], b["peak_in_kbps"], b["peak_out_kbps"])
                    for name, b in sorted(status.get("bandwidth", {}).items())])
    drops = status.get("stats", {}).get("drops", {})
    lines += table("dropped packets", ("reason", "count"), sorted(drops.items(), key=lambda kv: -kv[1]))
    return "\n".join(lines)


def run(args):
    try:
        path = args.socket or socket_of(args.config)
        status = query_status(path)
    except ConfigError as exc:
        print("upbx status: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("upbx status: cannot reach a daemon at %s: %s" % (path, exc.strerror or exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        print(render(status))
    return 0
