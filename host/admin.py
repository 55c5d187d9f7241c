"""`upbx admin`: manage the main host's directory, system information and call records.

    upbx admin --config main.toml site add north --uplink-kbps 512
    upbx admin --config main.toml host add north-pi --site north     # prints the secret once
    upbx admin --config main.toml ext add 201 --site north --name "Front desk"

A refused change prints one line on stderr and exits 1; the database is left as it was.
"""
import datetime
import json
import os
import sqlite3
import sys

from upbx.host import features, firmware, groups_admin, tokens, voicemail_admin
from upbx.host.sip import trunk
from upbx.host.moh import MAX_SECONDS, MusicOnHoldError, wav_ulaw
from upbx.host.config import ConfigError, load_main_config
from upbx.host.directory import Directory, DirectoryError, StoreUnavailable, SYSINFO_KEYS


class AdminError(Exception):
    """One line for stderr, then exit 1."""


def add_arguments(parser):
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="MAIN.toml", help="the main host's configuration (its database key)")
    where.add_argument("--database", metavar="PATH", help="the main host's SQLite database")
    things = parser.add_subparsers(dest="thing", metavar="{site,host,ext,group,moh,voicemail,attendant,trunk,route,did,calls,sysinfo,token,firmware}",
                                   required=True)

    site = _actions(things, "site", "sites (shops, farms, schools...)")
    p = _leaf(site, "add", "add a site")
    p.add_argument("name")
    p.add_argument("--uplink-kbps", type=int, default=0, metavar="N", help="uplink budget (0 = no limit)")
    p.add_argument("--no-local-calls", action="store_true", help="refuse calls between the site's own phones")
    p.add_argument("--local-call-quota", type=int, default=0, metavar="N",
                   help="most concurrent local calls (0 = unlimited)")
    _leaf(site, "list", "list sites")
    _leaf(site, "remove", "remove a site with no remote host and no extensions").add_argument("name")

    host = _actions(things, "host", "remote hosts (one per site)")
    p = _leaf(host, "add", "add a site's remote host and print its secret (shown once)")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    _leaf(host, "list", "list remote hosts")
    _leaf(host, "remove", "remove a remote host").add_argument("name")

    ext = _actions(things, "ext", "extensions (handsets)")
    p = _leaf(ext, "add", "add an extension and print its secret (shown once)")
    p.add_argument("number")
    p.add_argument("--site", required=True)
    p.add_argument("--name", default="", help="name shown in the directory")
    p.add_argument("--sip", action="store_true", help="for a SIP phone: print its SIP password instead (docs/sip.md)")
    p = _leaf(ext, "sip", "give an extension a new SIP password and print it (shown once), or --off")
    p.add_argument("number")
    p.add_argument("--off", action="store_true", help="the extension is no SIP phone's any more")
    _leaf(ext, "list", "list extensions").add_argument("--site", help="only this site's")
    _leaf(ext, "remove", "remove an extension").add_argument("number")
    _leaf(ext, "bar", "bar an extension from local calls").add_argument("number")
    _leaf(ext, "unbar", "allow an extension local calls again").add_argument("number")
    p = _leaf(ext, "forward", "forward an extension's calls (always, on busy, on no answer) or stop (off)")
    p.add_argument("number")
    p.add_argument("kind", choices=("always", "busy", "noanswer", "off"))
    p.add_argument("target", nargs="?", help="the extension calls go to (not with off)")
    p.add_argument("--after", type=int, metavar="S", help="noanswer: seconds of ringing first (default %d)"
                   % features.DEFAULT_NOANSWER_S)
    p = _leaf(ext, "dnd", "do not disturb: calls to the extension are refused with that cause")
    p.add_argument("number")
    p.add_argument("state", choices=("on", "off"))
    _leaf(ext, "features", "an extension's do-not-disturb and forwarding settings").add_argument("number")

    groups_admin.add_arguments(things, _actions, _leaf)

    moh = _actions(things, "moh", "music on hold, played by every host to held parties")
    _leaf(moh, "set", "play this WAV (8 kHz, mono, 16-bit, at most %d s)" % MAX_SECONDS).add_argument("wav")
    _leaf(moh, "unset", "play the generated default again")
    _leaf(moh, "show", "which music is played, and its version")
    voicemail_admin.add_arguments(things, _actions, _leaf)
    trunk.add_arguments(things, _actions, _leaf)

    p = _leaf(things, "calls", "show call records, newest first")
    p.add_argument("--limit", type=int, default=100, metavar="N")
    p.add_argument("--since", metavar="TIME", help="started at or after TIME (ISO 8601, UTC unless it says)")
    p.add_argument("--until", metavar="TIME", help="started before TIME")
    p.add_argument("--site", help="calls of this site's extensions or remote host")
    p.add_argument("--extension", metavar="NUMBER", help="calls from or to this extension")

    info = _actions(things, "sysinfo", "system information sent to every remote host and phone")
    _leaf(info, "show", "show the system information and its version")
    keys = ", ".join(SYSINFO_KEYS) + ", settings.NAME"
    p = _leaf(info, "set", "set one key (%s)" % keys)
    p.add_argument("key")
    p.add_argument("value")
    _leaf(info, "unset", "remove one key").add_argument("key")
    tokens.add_arguments(things, _actions, _leaf)
    firmware.add_arguments(things, _actions, _leaf)   # host/firmware.py


def _actions(things, name, help_text):
    parser = things.add_parser(name, help=help_text)
    return parser.add_subparsers(dest="action", required=True)


def _leaf(actions, name, help_text):
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(args):
    try:
        directory = _open(args)
    except AdminError as exc:
        return _fail(exc)
    try:
        with directory:
            handler = HANDLERS[(args.thing, getattr(args, "action", None))]
            handler(directory, args)
    except (AdminError, DirectoryError, tokens.TokenError) as exc:
        return _fail(exc)
    except sqlite3.Error as exc:
        return _fail("database %s: %s" % (directory.path, exc))
    except StoreUnavailable as exc:   # a cluster's PostgreSQL went away meanwhile
        return _fail(exc)
    return 0


def _fail(message):
    print("upbx admin: %s" % message, file=sys.stderr)
    return 1


def _open(args):
    path = args.database
    if args.config:
        try:
            config = load_main_config(args.config)
        except ConfigError as exc:
            raise AdminError(str(exc)) from None
        if config.cluster_postgres:   # a cluster's directory is PostgreSQL's (docs/cluster.md)
            return _open_postgres(args, config)
        path = config.database
        if path == ":memory:":
            raise AdminError("%s: key 'main.database' is \":memory:\"; nothing to administer" % args.config)
    try:
        directory = Directory(path)
    except (sqlite3.Error, OSError) as exc:
        raise AdminError("cannot open database %s: %s" % (path, exc)) from None
    for warning in directory.warnings:
        print("upbx admin: warning: %s" % warning, file=sys.stderr)
    return directory


# what a cluster keeps only in each node's own SQLite so far: refused with --config on a cluster
CLUSTER_NOT_YET = {"token": "API tokens", "voicemail": "voicemail settings", "attendant": "auto-attendants",
                   "firmware": "firmware bundles", "trunk": "SIP trunks"}


def _open_postgres(args, config):
    if args.thing in CLUSTER_NOT_YET:
        raise AdminError("%s: `upbx admin %s` works on a single main host's SQLite only so far; a cluster keeps "
                         "no %s yet (docs/cluster.md)" % (args.config, args.thing, CLUSTER_NOT_YET[args.thing]))
    from upbx.host.cluster.postgres import PostgresDirectory   # psycopg: the cluster extra
    try:
        return PostgresDirectory(config.cluster_postgres)
    except StoreUnavailable as exc:
        raise AdminError("%s: key 'cluster.postgres': %s" % (args.config, exc)) from None


# subcommands

def site_add(d, args):
    d.add_site(args.name, uplink_kbps=args.uplink_kbps, local_calls=not args.no_local_calls,
               local_call_quota=args.local_call_quota)
    _done(args, "site %r added" % args.name, d.site(args.name)._asdict())


def site_list(d, args):
    rows = []
    for site in d.sites():
        host = d.remote_host_of_site(site.name)
        row = site._asdict()
        row["remote_host"] = host.name if host else None
        row["extensions"] = len(d.extensions(site.name))
        rows.append(row)
    _table(args, rows, [("name", "SITE"), ("uplink_kbps", "UPLINK_KBPS"), ("local_calls", "LOCAL_CALLS"),
                        ("local_call_quota", "QUOTA"), ("remote_host", "REMOTE_HOST"), ("extensions", "EXTENSIONS")])


def site_remove(d, args):
    d.remove_site(args.name)
    _done(args, "site %r removed" % args.name, {"name": args.name})


def host_add(d, args):
    secret = d.add_remote_host(args.name, args.site)
    _secret(args, "remote host %r added to site %r" % (args.name, args.site),
            {"name": args.name, "site": args.site, "secret": secret.hex()})


def host_list(d, args):
    rows = [{"name": h.name, "site": h.site} for h in d.remote_hosts()]
    _table(args, rows, [("name", "REMOTE_HOST"), ("site", "SITE")])


def host_remove(d, args):
    d.remove_remote_host(args.name)
    _done(args, "remote host %r removed" % args.name, {"name": args.name})


def ext_add(d, args):
    secret = d.add_extension(args.number, args.site, args.name, sip=args.sip)
    value = {"number": args.number, "site": args.site, "name": args.name, "secret": secret.hex()}
    if args.sip:
        value["sip_password"] = d.sip_password(args.number)
        return _sip_password(args, "extension %s added to site %r" % (args.number, args.site), value)
    _secret(args, "extension %s added to site %r" % (args.number, args.site), value)


def ext_sip(d, args):
    if args.off:
        d.remove_sip_password(args.number)
        return _done(args, "extension %s is no SIP phone's any more" % args.number, {"number": args.number})
    password = d.set_sip_password(args.number)
    _sip_password(args, "extension %s has a new SIP password" % args.number,
                  {"number": args.number, "sip_password": password})


def _sip_password(args, message, value):
    """The SIP password alone on stdout (for scripts), how to use it on stderr."""
    if args.json:
        return _print_json(value, args)
    print("%s; its SIP password (user name %s, realm upbx), shown only this once:" % (message, args.number),
          file=sys.stderr)
    print(value["sip_password"])


def ext_list(d, args):
    if args.site is not None and d.site(args.site) is None:
        raise AdminError("unknown site %r" % args.site)
    rows = [{"number": e.number, "site": e.site, "name": e.name, "barred": e.barred}
            for e in d.extensions(args.site)]
    _table(args, rows, [("number", "NUMBER"), ("site", "SITE"), ("name", "NAME"), ("barred", "BARRED")])


def ext_remove(d, args):
    d.remove_extension(args.number)
    _done(args, "extension %s removed" % args.number, {"number": args.number})


def ext_bar(d, args):
    d.set_barred(args.number, True)
    _done(args, "extension %s barred from local calls" % args.number, {"number": args.number, "barred": True})


def ext_unbar(d, args):
    d.set_barred(args.number, False)
    _done(args, "extension %s may make local calls" % args.number, {"number": args.number, "barred": False})


def _set_features(d, args, changes, message):
    if d.extension(args.number) is None:
        raise AdminError("unknown extension %r" % args.number)
    settings = d.features(args.number)
    settings.update(changes)
    try:
        settings = d.set_features(args.number, settings, announce=True)
    except features.FeatureError as exc:
        raise AdminError(str(exc)) from None
    _done(args, message, dict(settings, number=args.number))


def ext_forward(d, args):
    if args.kind == "off":
        if args.target or args.after is not None:
            raise AdminError("ext forward %s off: takes no target or --after" % args.number)
        return _set_features(d, args, {"always": None, "busy": None, "noanswer": None},
                             "extension %s: forwarding off" % args.number)
    if not args.target:
        raise AdminError("ext forward %s %s: which extension? (ext forward NUMBER %s TARGET)"
                         % (args.number, args.kind, args.kind))
    if d.extension(args.target) is None:
        raise AdminError("ext forward %s %s: unknown extension %r" % (args.number, args.kind, args.target))
    if args.target == args.number:
        raise AdminError("ext forward %s %s: an extension cannot forward to itself" % (args.number, args.kind))
    if args.after is not None and args.kind != "noanswer":
        raise AdminError("ext forward: --after is for noanswer only")
    changes = {args.kind: args.target}
    if args.after is not None:
        changes["noanswer_s"] = args.after
    after = " after %d s" % (args.after or d.features(args.number)["noanswer_s"]) if args.kind == "noanswer" else ""
    _set_features(d, args, changes, "extension %s: forward %s to %s%s" % (args.number, args.kind, args.target, after))


def ext_dnd(d, args):
    _set_features(d, args, {"dnd": args.state == "on"}, "extension %s: do not disturb %s" % (args.number, args.state))


def ext_features(d, args):
    if d.extension(args.number) is None:
        raise AdminError("unknown extension %r" % args.number)
    settings = d.features(args.number)
    _done(args, " ".join("%s=%s" % (k, "-" if v is None else v) for k, v in sorted(settings.items())),
          dict(settings, number=args.number))


def moh_set(d, args):
    try:
        ulaw = wav_ulaw(args.wav)
    except MusicOnHoldError as exc:
        raise AdminError(str(exc)) from None
    name = os.path.basename(args.wav)
    version = d.set_music_on_hold(name, ulaw)
    seconds = len(ulaw) / 8000
    _done(args, "music on hold: %s (%.1f s), version %d; the hosts play it within a second or two"
          % (name, seconds, version), {"name": name, "seconds": seconds, "version": version})


def moh_unset(d, args):
    version = d.set_music_on_hold("default", b"")
    _done(args, "music on hold: the generated default, version %d" % version, {"name": "default", "version": version})


def moh_show(d, args):
    version, name, ulaw = d.music_on_hold()
    _done(args, "music on hold: %s (%.1f s), version %d" % (name, len(ulaw) / 8000 if ulaw else 1.6, version),
          {"name": name, "seconds": len(ulaw) / 8000 if ulaw else 1.6, "version": version})


def calls(d, args):
    if args.limit < 1:
        raise AdminError("bad --limit %d: use a number >= 1" % args.limit)
    since, until = _time_arg("--since", args.since), _time_arg("--until", args.until)
    if args.site is not None and d.site(args.site) is None:
        raise AdminError("unknown site %r" % args.site)
    records = [r._asdict() for r in d.call_records(args.limit, since_ms=since, until_ms=until, site=args.site,
                                                   extension=args.extension)]
    if args.json:
        return _print_json(records, args)
    rows = []
    for r in records:
        talk = None
        if r["answered_ms"] is not None and r["ended_ms"] is not None:
            talk = "%.1f" % ((r["ended_ms"] - r["answered_ms"]) / 1000)
        rows.append(dict(r, started=_time(r["started_ms"]), talk_s=talk))
    _table(args, rows, [("started", "STARTED (UTC)"), ("origin", "ORIGIN"), ("caller", "CALLER"),
                        ("callee", "CALLEE"), ("path", "PATH"), ("setup_ms", "SETUP_MS"), ("talk_s", "TALK_S"),
                        ("cause", "CAUSE"), ("dialled", "DIALLED"), ("uid", "UID"), ("linked", "LINKED")])


def sysinfo_show(d, args):
    version, data = d.sysinfo()
    if args.json:
        return _print_json({"version": version, "data": data}, args)
    print("version %d" % version)
    for key, value in _flatten(data):
        print("%s = %s" % (key, json.dumps(value) if not isinstance(value, str) else value))


def sysinfo_set(d, args):
    version = d.set_sysinfo(args.key, args.value)
    _done(args, "%s set; sysinfo version %d" % (args.key, version), {"key": args.key, "version": version})


def sysinfo_unset(d, args):
    version = d.set_sysinfo(args.key, None)
    _done(args, "%s removed; sysinfo version %d" % (args.key, version), {"key": args.key, "version": version})


HANDLERS = {
    ("site", "add"): site_add, ("site", "list"): site_list, ("site", "remove"): site_remove,
    ("host", "add"): host_add, ("host", "list"): host_list, ("host", "remove"): host_remove,
    ("ext", "add"): ext_add, ("ext", "sip"): ext_sip, ("ext", "list"): ext_list, ("ext", "remove"): ext_remove,
    ("ext", "bar"): ext_bar, ("ext", "unbar"): ext_unbar, ("ext", "forward"): ext_forward,
    ("ext", "dnd"): ext_dnd, ("ext", "features"): ext_features,
    ("moh", "set"): moh_set, ("moh", "unset"): moh_unset, ("moh", "show"): moh_show,
    ("calls", None): calls,
    ("group", "add"): lambda d, args: groups_admin.group_add(d, args, _done),
    ("group", "set"): lambda d, args: groups_admin.group_set(d, args, _done),
    ("group", "list"): lambda d, args: groups_admin.group_list(d, args, _table),
    ("group", "show"): lambda d, args: groups_admin.group_show(d, args, _done),
    ("group", "del"): lambda d, args: groups_admin.group_del(d, args, _done),
    ("sysinfo", "show"): sysinfo_show, ("sysinfo", "set"): sysinfo_set, ("sysinfo", "unset"): sysinfo_unset,
}


# output

def _print_json(value, args=None):
    """JSON on stdout; a caller that set args.collect (a list; the JSON API, host/api.py) gets the value there."""
    collect = getattr(args, "collect", None)
    if collect is not None:
        return collect.append(value)
    print(json.dumps(value, indent=2, sort_keys=True))


def _done(args, message, value):
    if args.json:
        _print_json(value, args)
    else:
        print(message)


def _secret(args, message, value, key="secret"):
    """The secret alone on stdout (for scripts), the explanation on stderr."""
    if args.json:
        return _print_json(value, args)
    print("%s; its %s, shown only this once:" % (message, key), file=sys.stderr)
    print(value[key])


def _table(args, rows, columns):
    if args.json:
        return _print_json(rows, args)
    cells = [[title for _, title in columns]]
    for row in rows:
        cells.append([_cell(row[key]) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _time_arg(flag, text):
    """Epoch ms of an ISO 8601 time (a date alone is its midnight; UTC unless it names a zone), or None."""
    if text is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise AdminError("bad %s %r: use an ISO 8601 time such as 2026-12-01T09:30:00Z or 2026-12-01"
                         % (flag, text)) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def _time(ms):
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _flatten(data, prefix=""):
    for key in sorted(data):
        if isinstance(data[key], dict):
            yield from _flatten(data[key], prefix + key + ".")
        else:
            yield prefix + key, data[key]


def _voicemail(handler, output):
    return lambda d, args: handler(d, args, AdminError, output)


HANDLERS.update({   # host/tokens.py
    ("token", "add"): lambda d, args: tokens.token_add(d, args, _secret),
    ("token", "list"): lambda d, args: tokens.token_list(d, args, _table),
    ("token", "remove"): lambda d, args: tokens.token_remove(d, args, _done),
})
HANDLERS.update({   # host/voicemail_admin.py
    ("voicemail", "on"): _voicemail(voicemail_admin.voicemail_switch, _done),
    ("voicemail", "off"): _voicemail(voicemail_admin.voicemail_switch, _done),
    ("voicemail", "greeting"): _voicemail(voicemail_admin.voicemail_greeting, _done),
    ("voicemail", "list"): _voicemail(voicemail_admin.voicemail_list, _table),
    ("attendant", "set"): _voicemail(voicemail_admin.attendant_set, _done),
    ("attendant", "list"): _voicemail(voicemail_admin.attendant_list, _table),
    ("attendant", "remove"): _voicemail(voicemail_admin.attendant_remove, _done),
})
HANDLERS.update(firmware.handlers(_done, _table))   # host/firmware.py

HANDLERS.update(trunk.handlers(_done, _table))   # host/sip/trunk.py
