"""The main host's JSON API (docs/operations.md, "API"): aiohttp in the daemon's own event loop.

Opt-in: `api_listen` in main.toml. Every request carries a token (`Authorization: Bearer
TOKEN`, host/tokens.py; the web page, host/web.py, signs in with one and keeps it in a cookie).
Reads and writes go through `upbx admin`'s own handlers (host/admin.py) on the main host's
directory, so the API validates exactly as the command does and each write is one SQLite
transaction; the fields of a request are checked first, so bad input is answered 400 naming the
field and nothing is written. Live status is read from the running core (host/main_host.py).
"""
import argparse
import asyncio
import csv
import datetime
import io
import sqlite3
import ssl
import urllib.parse

from aiohttp import web

from upbx.host import admin, directory as dirmod, tokens
from upbx.host.config import ConfigError
from upbx.host.daemon import ServiceError

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CSV_LIMIT = 100000   # call records in one CSV export unless ?limit= says otherwise


class ApiService:
    """The API's listener: started and stopped by the daemon (host/daemon.py) in its loop."""

    def __init__(self, config):
        self.config = config
        self.ssl = None
        if config.api_certificate:
            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                self.ssl.load_cert_chain(config.api_certificate, config.api_private_key or None)
            except (OSError, ssl.SSLError) as exc:
                key = "main.api_private_key" if config.api_private_key else "main.api_certificate"
                raise ConfigError(config.path, key, "cannot load the certificate and key: %s"
                                  % (getattr(exc, "strerror", None) or exc)) from None
        self.runner = None
        self.url = None

    async def start(self, daemon):
        from upbx.host import web as pages
        app = web.Application(middlewares=[_errors, _authenticate], client_max_size=1 << 20)
        app["core"] = daemon.core
        app["https"] = self.ssl is not None
        add_routes(app)
        pages.add_routes(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        host, port = self.config.api_listen
        # a request still running when the daemon stops (a large export) gets 2 s, not aiohttp's 60
        site = web.TCPSite(self.runner, host, port, ssl_context=self.ssl, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise ServiceError("%s: key 'main.api_listen': cannot listen on %s:%d: %s"
                               % (self.config.path, host, port, exc.strerror or exc)) from None
        self.url = "%s://%s:%d/" % ("https" if self.ssl else "http", host, port)
        daemon.log.info("api", url=self.url)

    async def stop(self):
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class BadInput(Exception):
    """A request the API refuses: HTTP status, message and (for 400) the field at fault."""

    def __init__(self, status, message, field=None):
        super().__init__(message)
        self.status = status
        self.field = field


def error_body(status, message, field=None):
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request, handler):
    try:
        return await handler(request)
    except BadInput as exc:
        if not request.path.startswith("/api/"):
            raise web.HTTPBadRequest(text=str(exc))
        return error_body(exc.status, str(exc), exc.field)


@web.middleware
async def _authenticate(request, handler):
    """Every /api/ path needs a token; a viewer's token only reads."""
    if not request.path.startswith("/api/"):
        return await handler(request)   # the web page signs in itself (host/web.py)
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else None
    who = tokens.check(directory(request), token)
    if who is None:
        return web.json_response({"error": "a valid token is needed (Authorization: Bearer TOKEN)"},
                                 status=401, headers={"WWW-Authenticate": 'Bearer realm="upbx"'})
    if request.method in WRITE_METHODS and who[1] != "admin":
        return error_body(403, "token %r is a viewer's: it may only read" % who[0])
    request["who"] = who
    return await handler(request)


def directory(request):
    return request.app["core"].directory


async def write_apart(d, change, *args, local=False):
    """change(directory, *args), a write, in a worker thread on a connection of its own: a write that waits
    for a locked database (a long `upbx admin` transaction, up to the 10 s busy timeout) must not hold up
    the daemon's loop, which relays media. The core reads the directory as it needs it and polls the
    system information's version, so it sees the change as it sees `upbx admin`'s. An in-memory directory
    (tests) is changed in the loop: no other connection sees it.

    A cluster node's directory is PostgreSQL's (docs/cluster.md "The API and web page of a node"): the
    change is made there, on the node's writer thread, unless `local` (what a cluster keeps in each
    node's own file: admin.CLUSTER_NOT_YET)."""
    if d.path == ":memory:":
        return change(d, *args)
    if getattr(d, "primary", None) is not None and not local:
        return await _at_postgres(d, lambda done: d.change_later(lambda own: change(own, *args), done), "change")

    def run():
        try:
            return write(change, *args)
        except sqlite3.OperationalError as exc:   # "database is locked": the busy timeout ran out
            raise BadInput(503, "the database is busy (%s): another writer holds it, e.g. a long `upbx admin` "
                                "transaction; nothing was written, try again" % exc) from None

    def write(change, *args):
        # the core's Directory opened the file (schema, WAL): this connection only writes through it
        own = dirmod.Directory.__new__(dirmod.Directory)
        own.path, own.warnings = d.path, []
        own.db = sqlite3.connect(d.path, isolation_level=None, timeout=10)
        try:
            own.db.execute("PRAGMA foreign_keys = ON")
            return change(own, *args)
        finally:
            own.db.close()
    return await asyncio.to_thread(run)


async def admin_apart(request, thing, action, **fields):
    """run_admin of a write, in write_apart."""
    return await write_apart(directory(request), lambda d: run_admin(d, thing, action, **fields),
                             local=thing in admin.CLUSTER_NOT_YET)


async def _at_postgres(d, start, what):
    """start(done): a cluster node's PostgreSQL work handed to its threads (host/cluster/replica.py), done
    called on the loop; its result, or BadInput 503 when PostgreSQL is away or has not answered within
    the node's `api_wait_s` (counted in the node's status while it waits: `api_waiting`). Given up on,
    the work is withdrawn if its thread has not come to it (a hung PostgreSQL holds an earlier one):
    the 503 then says nothing was changed (`api_withdrawn` counts them); else that it may still be."""
    future = asyncio.get_running_loop().create_future()

    def done(result, error, _now):
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    d.api_waiting += 1
    job = None
    try:
        job = start(done)
        return await asyncio.wait_for(asyncio.shield(future), d.api_wait_s)
    except asyncio.TimeoutError:
        message = "the cluster's PostgreSQL did not answer within %d s" % d.api_wait_s
        if job is not None and job.withdraw():
            d.api_withdrawn += 1
            if what == "change":
                message += ": nothing was changed (it was still waiting behind earlier work); try again later"
        elif what == "change":
            message += ": the change may still be made when it answers; look before trying again"
        raise BadInput(503, message) from None
    except dirmod.StoreUnavailable as exc:
        raise BadInput(503, "%s%s; try again when the cluster's PostgreSQL is back"
                       % (exc, ": nothing was changed" if what == "change" and "nothing" not in str(exc) else ""))
    finally:
        d.api_waiting -= 1


# the same handlers as `upbx admin`

def run_admin(d, thing, action, **fields):
    """Run `upbx admin THING ACTION` with these arguments on d; its JSON value. Its refusal is
    BadInput: 404 for the unknown object the path names, 409 for a conflict, else 400."""
    args = argparse.Namespace(thing=thing, action=action, json=True, collect=[], **fields)
    try:
        admin.HANDLERS[(thing, action)](d, args)
    except (admin.AdminError, dirmod.DirectoryError, tokens.TokenError) as exc:
        text = str(exc)
        status = 409 if "already" in text or "still has" in text or "overflow of" in text else 400
        if text.startswith("unknown"):
            status = 404
        raise BadInput(status, text) from None
    return args.collect[0] if args.collect else None


# request fields: each checked by the directory's own rules before anything is written

def _need(body, field, kind, required=True, default=None):
    if field not in body or body[field] is None:
        if required:
            raise BadInput(400, "missing field %r" % field, field)
        return default
    value = body[field]
    ok = {"str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}[kind]
    if not ok(value):
        raise BadInput(400, "field %r: expected %s, got %s" % (field, {
            "str": "a string", "bool": "true or false", "int": "an integer", "strs": "a list of strings"}[kind],
            type(value).__name__), field)
    return value


def _checked(field, check, *args):
    try:
        check(*args)
    except dirmod.DirectoryError as exc:
        raise BadInput(400, str(exc), field) from None


def _site_ref(d, field, name):
    if d.site(name) is None:
        raise BadInput(400, "unknown site %r" % name, field)


def _ext_ref(d, field, number):
    if d.extension(number) is None:
        raise BadInput(400, "unknown extension %r" % number, field)


async def _body(request, fields):
    """The request's JSON object; unknown fields are refused (a typo must not pass silently)."""
    try:
        body = await request.json()
    except ValueError:
        raise BadInput(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput(400, "the body must be a JSON object")
    for name in body:
        if name not in fields:
            raise BadInput(400, "unknown field %r (fields: %s)" % (name, ", ".join(fields)), name)
    return body


def _created(value):
    return web.json_response(value, status=201)


def _json(value):
    return web.json_response(value)


# sites and remote hosts

async def sites_get(request):
    return _json(run_admin(directory(request), "site", "list"))


SITE_FIELDS = ("name", "uplink_kbps", "local_calls", "local_call_quota")


async def sites_post(request):
    return _created(await write_apart(directory(request), create_site, await _body(request, SITE_FIELDS)))


def create_site(d, body):
    """`upbx admin site add` from a request's fields (the web page's form too)."""
    name = _need(body, "name", "str")
    _checked("name", dirmod.check_name, "site", name)
    uplink = _need(body, "uplink_kbps", "int", False, 0)
    _checked("uplink_kbps", dirmod.check_count, "uplink_kbps", uplink)
    quota = _need(body, "local_call_quota", "int", False, 0)
    _checked("local_call_quota", dirmod.check_count, "local call quota", quota)
    local = _need(body, "local_calls", "bool", False, True)
    return run_admin(d, "site", "add", name=name, uplink_kbps=uplink, no_local_calls=not local,
                     local_call_quota=quota)


async def site_delete(request):
    return _json(await admin_apart(request, "site", "remove", name=request.match_info["name"]))


async def hosts_get(request):
    return _json(run_admin(directory(request), "host", "list"))


async def hosts_post(request):
    return _created(await write_apart(directory(request), create_host, await _body(request, ("name", "site"))))


def create_host(d, body):
    name = _need(body, "name", "str")
    _checked("name", dirmod.check_name, "remote host", name)
    site = _need(body, "site", "str")
    _site_ref(d, "site", site)
    return run_admin(d, "host", "add", name=name, site=site)


async def host_delete(request):
    return _json(await admin_apart(request, "host", "remove", name=request.match_info["name"]))


# extensions

async def extensions_get(request):
    site = request.query.get("site")
    if site is not None and directory(request).site(site) is None:
        raise BadInput(400, "unknown site %r" % site, "site")
    return _json(run_admin(directory(request), "ext", "list", site=site))


async def extensions_post(request):
    return _created(await write_apart(directory(request), create_extension,
                                      await _body(request, ("number", "site", "name", "sip"))))


def create_extension(d, body):
    number = _need(body, "number", "str")
    _checked("number", dirmod.check_number, number)
    site = _need(body, "site", "str")
    _site_ref(d, "site", site)
    name = _need(body, "name", "str", False, "")
    _checked("name", dirmod.check_extension_name, name)
    sip = _need(body, "sip", "bool", False, False)   # a SIP phone's too: the answer has its sip_password (docs/sip.md)
    return run_admin(d, "ext", "add", number=number, site=site, name=name, sip=sip)


async def extension_get(request):
    d = directory(request)
    number = request.match_info["number"]
    row = d.extension(number)
    if row is None:
        raise BadInput(404, "unknown extension %r" % number)
    return _json({"number": row.number, "site": row.site, "name": row.name, "barred": row.barred,
                  "features": run_admin(d, "ext", "features", number=number)})


async def extension_patch(request):
    body = await _body(request, ("barred",))
    barred = _need(body, "barred", "bool")
    return _json(await admin_apart(request, "ext", "bar" if barred else "unbar", number=request.match_info["number"]))


async def extension_delete(request):
    return _json(await admin_apart(request, "ext", "remove", number=request.match_info["number"]))


async def extension_dnd(request):
    body = await _body(request, ("on",))
    on = _need(body, "on", "bool")
    return _json(await admin_apart(request, "ext", "dnd", number=request.match_info["number"],
                                   state="on" if on else "off"))


async def extension_forward(request):
    d = directory(request)
    body = await _body(request, ("kind", "target", "after"))
    kind = _need(body, "kind", "str")
    if kind not in ("always", "busy", "noanswer", "off"):
        raise BadInput(400, "field 'kind': use always, busy, noanswer or off", "kind")
    target = _need(body, "target", "str", kind != "off")
    if target is not None:
        _ext_ref(d, "target", target)
    after = _need(body, "after", "int", False)
    if after is not None and kind != "noanswer":
        raise BadInput(400, "field 'after' is for noanswer only", "after")
    return _json(await admin_apart(request, "ext", "forward", number=request.match_info["number"], kind=kind,
                                   target=target, after=after))


async def extension_voicemail(request):
    body = await _body(request, ("on",))
    on = _need(body, "on", "bool")
    return _json(await admin_apart(request, "voicemail", "on" if on else "off", number=request.match_info["number"]))


async def voicemail_get(request):
    return _json(run_admin(directory(request), "voicemail", "list", number=request.match_info["number"]))


async def attendants_get(request):
    return _json(run_admin(directory(request), "attendant", "list"))


# groups

GROUP_FIELDS = ("number", "strategy", "members", "ring_s", "overflow", "site")


def _group_args(request, body, number):
    d = directory(request)
    strategy = _need(body, "strategy", "str", False)
    members = _need(body, "members", "strs", False)
    for member in members or []:
        _ext_ref(d, "members", member)
    ring_s = _need(body, "ring_s", "int", False)
    overflow = _need(body, "overflow", "str", False)
    site = _need(body, "site", "str", False)
    if site is not None:
        _site_ref(d, "site", site)
    return dict(number=number, strategy=strategy, members=",".join(members) if members is not None else None,
                ring_s=ring_s, overflow=overflow, site=site)


async def groups_get(request):
    return _json(run_admin(directory(request), "group", "list"))


async def group_get(request):
    return _json(run_admin(directory(request), "group", "show", number=request.match_info["number"]))


async def groups_post(request):
    body = await _body(request, GROUP_FIELDS)
    number = _need(body, "number", "str")
    _checked("number", dirmod.check_number, number)
    fields = _group_args(request, body, number)
    if fields["strategy"] is None:
        fields["strategy"] = "ring-all"
    return _created(await admin_apart(request, "group", "add", **fields))


async def group_patch(request):
    body = await _body(request, GROUP_FIELDS[1:])
    fields = _group_args(request, body, request.match_info["number"])
    return _json(await admin_apart(request, "group", "set", **fields))


async def group_delete(request):
    return _json(await admin_apart(request, "group", "del", number=request.match_info["number"]))


# system information, music on hold

async def sysinfo_get(request):
    return _json(run_admin(directory(request), "sysinfo", "show"))


async def sysinfo_put(request):
    body = await _body(request, ("value",))
    return _json(await write_apart(directory(request), set_sysinfo, request.match_info["key"],
                                   _need(body, "value", "str")))


def set_sysinfo(d, key, value):
    try:
        return run_admin(d, "sysinfo", "set", key=key, value=value)
    except BadInput as exc:
        raise BadInput(400, str(exc), "key") from None


async def sysinfo_delete(request):
    try:
        return _json(await admin_apart(request, "sysinfo", "unset", key=request.match_info["key"]))
    except BadInput as exc:
        raise BadInput(400, str(exc), "key") from None


async def moh_get(request):
    return _json(run_admin(directory(request), "moh", "show"))


# call records

def call_query(query):
    """The admin arguments of a call-record query (?since=&until=&site=&extension=&limit=)."""
    for name in query:
        if name not in ("since", "until", "site", "extension", "limit"):
            raise BadInput(400, "unknown parameter %r (since, until, site, extension, limit)" % name, name)
    fields = {name: query.get(name) for name in ("since", "until", "site", "extension")}
    for name in ("since", "until"):
        try:
            admin._time_arg(name, fields[name])
        except admin.AdminError as exc:
            raise BadInput(400, str(exc), name) from None
    if fields["extension"] is not None:
        _checked("extension", dirmod.check_number, fields["extension"])
    limit = query.get("limit")
    if limit is not None:
        if not limit.isdigit() or int(limit) < 1:
            raise BadInput(400, "bad limit %r: use a number >= 1" % limit, "limit")
        fields["limit"] = int(limit)
    return fields


def call_records(d, query, default_limit):
    fields = call_query(query)
    fields.setdefault("limit", default_limit)
    if fields["site"] is not None:
        _site_ref(d, "site", fields["site"])
    return run_admin(d, "calls", None, **fields)


async def call_records_apart(d, query, default_limit, then=lambda records: records):
    """call_records (and then(records)) in a worker thread on a connection of its own: a large
    export must not hold up the daemon's loop, which relays media (WAL lets it read alongside).
    An in-memory directory (tests) is read in the loop: no other connection sees it. A cluster node's
    records are PostgreSQL's: read on a connection of its own there (ReplicaDirectory.read_later)."""
    if d.path == ":memory:":
        return then(call_records(d, query, default_limit))
    if getattr(d, "primary", None) is not None:
        return await _at_postgres(d, lambda done: d.read_later(
            lambda own: then(call_records(own, query, default_limit)), done), "read")

    def read():
        # a read-only connection as a Directory: no schema check, which would take the write lock
        own = dirmod.Directory.__new__(dirmod.Directory)
        own.path = d.path
        own.db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(d.path), uri=True, timeout=10)
        try:
            return then(call_records(own, query, default_limit))
        finally:
            own.db.close()
    return await asyncio.to_thread(read)


CSV_COLUMNS = ("started", "origin", "caller", "callee", "dialled", "path", "setup_ms", "talk_s", "cause", "uid",
               "linked", "started_ms", "answered_ms", "ended_ms")


def iso(ms):
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_row(r):
    """A call record as the CSV export and the web page show it."""
    talk = None
    if r["answered_ms"] is not None and r["ended_ms"] is not None:
        talk = round((r["ended_ms"] - r["answered_ms"]) / 1000, 1)
    return dict(r, started=iso(r["started_ms"]), talk_s=talk)


def records_csv(records):
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for r in records:
        writer.writerow(record_row(r))
    return out.getvalue()


async def calls_get(request):
    return _json(await call_records_apart(directory(request), request.query, 100))


async def calls_csv(request):
    text = await call_records_apart(directory(request), request.query, CSV_LIMIT, records_csv)
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="upbx-calls.csv"'})


# live status

def live_status(core):
    """Sites up or down (address, last seen), registered phones (at the main host, and those the remote
    hosts report with PHONE_STATE), calls in progress with their path, per-site bandwidth: what `upbx
    status` shows on the main host, by site."""
    d = core.directory
    status = core.status()
    wall = core.wall_ms(core.now)
    hosts = {l.name: l for l in core.links.values() if l.kind == "host"}
    phones = [l for l in core.links.values() if l.kind == "phone"]
    site_of_host = {h.name: h.site for h in d.remote_hosts()}
    sites = []
    for site in d.sites():
        host = d.remote_host_of_site(site.name)
        entry = {"name": site.name, "remote_host": host.name if host else None,
                 "uplink_kbps": site.uplink_kbps, "bandwidth": status["bandwidth"].get("site " + site.name),
                 "local_calls": len(core.local_calls.get(site.name, ()))}
        if host is not None:
            link = hosts.get(host.name)
            seen = link.session if link is not None else None
            gone = core.gone.get(("host", host.name))
            entry.update(up=link is not None, phones=len(core.site_phones.get(host.name, ())),
                         address="%s:%d" % link.address[:2] if link else (gone or {}).get("address"),
                         last_seen=iso(core.wall_ms(seen.last_seen_ms) if seen else (gone or {}).get("last_seen_ms")))
        else:   # phones straight at the main host: the site is up while one of them is registered
            mine = [l for l in phones if core._site_of(l) == site.name]
            last = max((core.wall_ms(l.session.last_seen_ms) for l in mine), default=None)
            if last is None:
                numbers = {e.number for e in d.extensions(site.name)}
                last = max((g["last_seen_ms"] for (k, n), g in core.gone.items() if k == "phone" and n in numbers),
                           default=None)
            entry.update(up=bool(mine), address=None, last_seen=iso(last), phones=len(mine))
        sites.append(entry)
    return {
        "time": iso(wall),
        "sites": sites,
        "phones": [{"extension": l.name, "site": core._site_of(l), "address": "%s:%d" % l.address[:2],
                    "last_seen": iso(core.wall_ms(l.session.last_seen_ms)), "via": None} for l in phones]
                  + [{"extension": number, "site": site_of_host.get(name), "address": None, "registered": iso(ms),
                      "via": name} for name, numbers in sorted(core.site_phones.items())
                     for number, ms in sorted(numbers.items())],
        "calls": status["calls"],
        "conferences": status["conferences"],
        "bandwidth": status["bandwidth"],
        "sysinfo_version": status["sysinfo_version"],
    }


async def status_get(request):
    return _json(live_status(request.app["core"]))


async def whoami(request):
    name, role = request["who"]
    return _json({"name": name, "role": role})


def add_routes(app):
    r = app.router
    r.add_get("/api/whoami", whoami)
    r.add_get("/api/status", status_get)
    r.add_get("/api/sites", sites_get)
    r.add_post("/api/sites", sites_post)
    r.add_delete("/api/sites/{name}", site_delete)
    r.add_get("/api/hosts", hosts_get)
    r.add_post("/api/hosts", hosts_post)
    r.add_delete("/api/hosts/{name}", host_delete)
    r.add_get("/api/extensions", extensions_get)
    r.add_post("/api/extensions", extensions_post)
    r.add_get("/api/extensions/{number}", extension_get)
    r.add_patch("/api/extensions/{number}", extension_patch)
    r.add_delete("/api/extensions/{number}", extension_delete)
    r.add_put("/api/extensions/{number}/dnd", extension_dnd)
    r.add_put("/api/extensions/{number}/forward", extension_forward)
    r.add_put("/api/extensions/{number}/voicemail", extension_voicemail)
    r.add_get("/api/voicemail/{number}", voicemail_get)
    r.add_get("/api/attendants", attendants_get)
    r.add_get("/api/groups", groups_get)
    r.add_post("/api/groups", groups_post)
    r.add_get("/api/groups/{number}", group_get)
    r.add_patch("/api/groups/{number}", group_patch)
    r.add_delete("/api/groups/{number}", group_delete)
    r.add_get("/api/sysinfo", sysinfo_get)
    r.add_put("/api/sysinfo/{key}", sysinfo_put)
    r.add_delete("/api/sysinfo/{key}", sysinfo_delete)
    r.add_get("/api/moh", moh_get)
    r.add_get("/api/calls", calls_get)
    r.add_get("/api/calls.csv", calls_csv)
