"""The web admin page (docs/operations.md, "Web admin"), served by the API's listener (host/api.py).

Server-rendered HTML: sign in with an API token (kept in an HttpOnly, SameSite=Strict cookie),
live status that a few lines of JavaScript refresh every second without a reload, sites and
remote hosts, extensions, system information, call records with CSV export. Nothing is loaded
from anywhere but this listener (the Content-Security-Policy says so to the browser too). Every
change goes through the same functions as the JSON API and `upbx admin`.
"""
import hashlib
import html
import hmac
import urllib.parse

from aiohttp import web

from upbx.host import api, tokens

COOKIE = "upbx_token"
REFRESH_MS = 1000
HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
PAGES = (("/", "Status"), ("/sites", "Sites"), ("/extensions", "Extensions"), ("/sysinfo", "System information"),
         ("/calls", "Call records"))

CSS = """
body { font-family: sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #1f3a5f; color: #fff; padding: 0.6em 1.2em; display: flex; align-items: center; gap: 1.5em; }
header a { color: #dfe8f5; text-decoration: none; } header a.here { color: #fff; font-weight: bold; }
header form { margin-left: auto; } header .who { opacity: 0.8; }
main { padding: 1em 1.2em; max-width: 70em; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em; background: #fff; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.6em; text-align: left; font-size: 0.92em; }
th { background: #e8ecf2; }
.up { color: #137333; font-weight: bold; } .down { color: #b3261e; font-weight: bold; }
.error { background: #fde7e9; border: 1px solid #b3261e; padding: 0.5em; }
.secret { background: #e6f4ea; border: 1px solid #137333; padding: 0.5em; font-family: monospace; }
form.inline { display: inline; } fieldset { background: #fff; border: 1px solid #ccd; margin-bottom: 1em; }
input, select, button { margin: 0.15em 0.3em 0.15em 0; }
.muted { color: #666; font-size: 0.85em; }
"""

JS = """
(function () {
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = parseInt(live.getAttribute("data-refresh-ms"), 10) || 1000;
  function refresh() {
    fetch("/live", {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (r.status === 401) { window.location = "/login"; return null; }
      return r.ok ? r.text() : null;
    }).then(function (text) {
      if (text !== null) { live.innerHTML = text; }
    }).catch(function () {}).then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
"""


def h(value):
    return html.escape("" if value is None else str(value))


def csrf(token):
    """The value every form carries: tied to the token, unknown to another site."""
    return hashlib.sha256(b"upbx web form\0" + token.encode()).hexdigest()[:32]


def signed_in(request):
    """(token, name, role) from the cookie, or None."""
    token = request.cookies.get(COOKIE)
    who = tokens.check(request.app["core"].directory, token)
    return (token,) + who if who else None


def page(request, title, body, status=200):
    who = request.get("web_who")
    nav = ""
    if who is not None:
        links = " ".join('<a href="%s"%s>%s</a>' % (path, ' class="here"' if path == request.path else "", h(name))
                         for path, name in PAGES)
        nav = ('%s<span class="who">%s (%s)</span><form method="post" action="/logout">%s'
               '<button type="submit" id="logout">Sign out</button></form>'
               % (links, h(who[1]), h(who[2]), _csrf_field(request)))
    text = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>%s - upbx</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/static/admin.css"></head><body><header><strong>upbx</strong>%s</header>'
            '<main><h1>%s</h1>%s</main><script src="/static/admin.js"></script></body></html>'
            % (h(title), nav, h(title), body))
    return web.Response(text=text, content_type="text/html", status=status, headers=HEADERS)


def _csrf_field(request):
    return '<input type="hidden" name="csrf" value="%s">' % csrf(request["web_who"][0])


def table(columns, rows, row_id=None):
    """An HTML table: columns [(key, title)], rows of dicts; cells escaped (a value may be markup
    only when wrapped in Markup)."""
    head = "".join("<th>%s</th>" % h(title) for _, title in columns)
    body = []
    for row in rows:
        ident = ' id="%s"' % h(row_id(row)) if row_id else ""
        body.append("<tr%s>%s</tr>" % (ident, "".join("<td>%s</td>" % _cell(row.get(key)) for key, _ in columns)))
    if not rows:
        body.append('<tr><td colspan="%d" class="muted">(none)</td></tr>' % len(columns))
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, "".join(body))


class Markup(str):
    """HTML made here from escaped parts: table() puts it in as is."""


def _cell(value):
    if isinstance(value, Markup):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return h("-" if value is None else value)


def button(request, action, label, ident):
    if request["web_who"][2] != "admin":
        return Markup("")
    return Markup('<form class="inline" method="post" action="%s">%s<button type="submit" id="%s">%s</button></form>'
                  % (h(action), _csrf_field(request), h(ident), h(label)))


def form(request, action, fields, label, ident):
    """An admin's form; a viewer sees none."""
    if request["web_who"][2] != "admin":
        return ""
    return ('<fieldset><legend>%s</legend><form method="post" action="%s" id="%s">%s%s'
            '<button type="submit">%s</button></form></fieldset>' % (h(label), h(action), h(ident),
                                                                   _csrf_field(request), "".join(fields), h(label)))


def field(name, label, kind="text", value="", **attrs):
    extra = "".join(' %s="%s"' % (k, h(v)) for k, v in attrs.items())
    if kind == "checkbox":
        return '<label>%s <input type="checkbox" name="%s" value="1"%s%s></label> ' % (
            h(label), h(name), " checked" if value else "", extra)
    return '<label>%s <input type="%s" name="%s" id="f-%s" value="%s"%s></label> ' % (
        h(label), kind, h(name), h(name), h(value), extra)


# middleware: who is signed in, and the form's CSRF value on every POST

@web.middleware
async def signed_in_only(request, handler):
    if request.path.startswith("/api/") or request.path.startswith("/static/") or request.path == "/login":
        return await handler(request)
    who = signed_in(request)
    if who is None:
        if request.path == "/live":
            raise web.HTTPUnauthorized()
        raise web.HTTPFound("/login")
    request["web_who"] = who
    if request.method == "POST":
        form_data = await request.post()
        if not hmac.compare_digest(str(form_data.get("csrf", "")), csrf(who[0])):
            raise web.HTTPForbidden(text="this form is stale or from another site: reload the page")
        if request.path != "/logout" and who[2] != "admin":
            raise web.HTTPForbidden(text="token %r is a viewer's: it may only read" % who[1])
    return await handler(request)


# sign in and out

async def login_get(request, error=None, status=200):
    body = ('%s<form method="post" action="/login" id="login"><label>API token <input type="password" '
            'name="token" id="token" size="60" autocomplete="off" autofocus></label>'
            '<button type="submit" id="sign-in">Sign in</button></form><p class="muted">A token comes from '
            '<code>upbx admin token add NAME --role admin|viewer</code> on the main host.</p>'
            % ('<p class="error">%s</p>' % h(error) if error else ""))
    return page(request, "Sign in", body, status)


async def login_post(request):
    token = str((await request.post()).get("token", "")).strip()
    who = tokens.check(request.app["core"].directory, token)
    if who is None:
        return await login_get(request, "That token is not valid.", 401)
    response = web.HTTPFound("/")
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.app["https"], path="/")
    raise response


async def logout(request):
    response = web.HTTPFound("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# live status

def live_html(core):
    s = api.live_status(core)
    sites = [dict(x, state=Markup('<span class="%s">%s</span>' % (("up", "up") if x["up"] else ("down", "down"))),
                  kbps=_kbps(x["bandwidth"])) for x in s["sites"]]
    calls = [dict(c, call=c["call"][:8]) for c in s["calls"]]
    return "".join([
        '<p class="muted">as of %s UTC</p>' % h(s["time"]),
        "<h2>Sites</h2>", table([("name", "site"), ("state", "state"), ("remote_host", "remote host"),
                                 ("address", "address"), ("last_seen", "last seen (UTC)"),
                                 ("kbps", "kbps in / out"), ("local_calls", "local calls")], sites,
                                lambda r: "site-" + r["name"]),
        "<h2>Registered phones</h2>", table([("extension", "extension"), ("site", "site"), ("via", "remote host"),
                                             ("address", "address"), ("last_seen", "last seen (UTC)")],
                                            s["phones"], lambda r: "phone-" + r["extension"]),
        "<h2>Calls in progress</h2>", table([("call", "call"), ("caller", "caller"), ("callee", "callee"),
                                             ("state", "state"), ("path", "path"), ("frames", "frames"),
                                             ("held", "held")], calls, lambda r: "call-" + r["call"]),
    ])


def _kbps(bandwidth):
    if not bandwidth:
        return None
    return "%s / %s" % (bandwidth["in_kbps"], bandwidth["out_kbps"])


async def status_page(request):
    body = ('<div id="live" data-refresh-ms="%d">%s</div><p class="muted">The address of a phone registered at a '
            'remote host is known there: <code>upbx status</code> on that host.</p>'
            % (REFRESH_MS, live_html(request.app["core"])))
    return page(request, "Status", body)


async def live(request):
    return web.Response(text=live_html(request.app["core"]), content_type="text/html", headers=HEADERS)


# sites and remote hosts

def _form_body(form_data, names, ints=(), bools=()):
    """A form's fields as the JSON API's body: empty fields left out, numbers and flags converted
    (a number that is not one is answered as the API would: 400 naming the field)."""
    body = {}
    for name in names:
        value = str(form_data.get(name, "")).strip()
        if name in bools:
            body[name] = value == "1"
        elif value == "":
            continue
        elif name in ints:
            if not value.lstrip("-").isdigit():
                raise api.BadInput(400, "field %r: expected an integer, got %r" % (name, value), name)
            body[name] = int(value)
        else:
            body[name] = value
    return body


async def sites_page(request, message="", status=200):
    d = request.app["core"].directory
    sites = api.run_admin(d, "site", "list")
    for s in sites:
        s["remove"] = button(request, "/sites/%s/remove" % s["name"], "Remove", "remove-site-" + s["name"])
    hosts = api.run_admin(d, "host", "list")
    for x in hosts:
        x["remove"] = button(request, "/hosts/%s/remove" % x["name"], "Remove", "remove-host-" + x["name"])
    body = message + table([("name", "site"), ("uplink_kbps", "uplink kbps"), ("local_calls", "local calls"),
                            ("local_call_quota", "quota"), ("remote_host", "remote host"),
                            ("extensions", "extensions"), ("remove", "")], sites, lambda r: "site-" + r["name"])
    body += form(request, "/sites", [field("name", "Name", required="required"),
                                     field("uplink_kbps", "Uplink kbps (0: no limit)", "number", min="0"),
                                     field("local_calls", "Local calls", "checkbox", True),
                                     field("local_call_quota", "Local call quota (0: none)", "number", min="0")],
                 "Add site", "add-site")
    body += "<h2>Remote hosts</h2>" + table([("name", "remote host"), ("site", "site"), ("remove", "")], hosts,
                                            lambda r: "host-" + r["name"])
    body += form(request, "/hosts", [field("name", "Name", required="required"),
                                     field("site", "Site", required="required")], "Add remote host", "add-host")
    return page(request, "Sites", body, status)


async def _change(request, render, change):
    """Run a change; the page again, with its result or its error."""
    try:
        message = await api.write_apart(request.app["core"].directory, change)   # off the loop (host/api.py)
    except api.BadInput as exc:
        where = " (%s)" % exc.field if exc.field else ""
        return await render(request, '<p class="error" id="error">%s%s</p>' % (h(exc), h(where)), exc.status)
    return await render(request, message or "")


def _secret_note(what, secret):
    return ('<p class="secret" id="secret">%s; its secret, shown only this once: <code>%s</code></p>'
            % (h(what), h(secret)))


async def sites_post(request):
    data = await request.post()

    def add(d):
        body = _form_body(data, api.SITE_FIELDS, ints=("uplink_kbps", "local_call_quota"), bools=("local_calls",))
        return api.create_site(d, body) and '<p class="secret">site %s added</p>' % h(body.get("name"))
    return await _change(request, sites_page, add)


async def site_remove(request):
    name = request.match_info["name"]
    return await _change(request, sites_page, lambda d: api.run_admin(d, "site", "remove", name=name) and "")


async def hosts_post(request):
    body = _form_body(await request.post(), ("name", "site"))

    def add(d):
        value = api.create_host(d, body)
        return _secret_note("remote host %s added to site %s" % (value["name"], value["site"]), value["secret"])
    return await _change(request, sites_page, add)


async def host_remove(request):
    name = request.match_info["name"]
    return await _change(request, sites_page, lambda d: api.run_admin(d, "host", "remove", name=name) and "")


# extensions

async def extensions_page(request, message="", status=200):
    d = request.app["core"].directory
    rows = api.run_admin(d, "ext", "list", site=None)
    for r in rows:
        n = r["number"]
        r["actions"] = Markup(button(request, "/extensions/%s/%s" % (n, "unbar" if r["barred"] else "bar"),
                                     "Allow local calls" if r["barred"] else "Bar local calls", "bar-" + n)
                              + button(request, "/extensions/%s/remove" % n, "Remove", "remove-ext-" + n))
    body = message + table([("number", "number"), ("site", "site"), ("name", "name"), ("barred", "barred"),
                            ("actions", "")], rows, lambda r: "ext-" + r["number"])
    body += form(request, "/extensions", [field("number", "Number", required="required", pattern="[0-9]{1,15}"),
                                          field("site", "Site", required="required"), field("name", "Name")],
                 "Add extension", "add-extension")
    return page(request, "Extensions", body, status)


async def extensions_post(request):
    body = _form_body(await request.post(), ("number", "site", "name"))

    def add(d):
        value = api.create_extension(d, body)
        return _secret_note("extension %s added to site %s" % (value["number"], value["site"]), value["secret"])
    return await _change(request, extensions_page, add)


def _extension_action(action):
    async def handler(request):
        number = request.match_info["number"]
        return await _change(request, extensions_page,
                             lambda d: api.run_admin(d, "ext", action, number=number) and "")
    return handler


# system information

async def sysinfo_page(request, message="", status=200):
    d = request.app["core"].directory
    info = api.run_admin(d, "sysinfo", "show")
    rows = []
    for key, value in _flatten(info["data"]):
        rows.append({"key": key, "value": value,
                     "remove": button(request, "/sysinfo/%s/remove" % urllib.parse.quote(key), "Remove",
                                      "remove-" + key)})
    body = message + '<p>version <span id="sysinfo-version">%d</span></p>' % info["version"]
    body += table([("key", "key"), ("value", "value"), ("remove", "")], rows, lambda r: "sysinfo-" + r["key"])
    body += form(request, "/sysinfo", [field("key", "Key (announcement, dial_plan, firmware_version, settings.NAME)",
                                             required="required"), field("value", "Value", size="40")],
                 "Set", "set-sysinfo")
    return page(request, "System information", body, status)


def _flatten(data, prefix=""):
    for key in sorted(data):
        if isinstance(data[key], dict):
            yield from _flatten(data[key], prefix + key + ".")
        else:
            yield prefix + key, data[key]


async def sysinfo_post(request):
    data = await request.post()
    key, value = str(data.get("key", "")).strip(), str(data.get("value", ""))
    return await _change(request, sysinfo_page, lambda d: api.set_sysinfo(d, key, value) and "")


async def sysinfo_remove(request):
    key = request.match_info["key"]
    return await _change(request, sysinfo_page, lambda d: api.run_admin(d, "sysinfo", "unset", key=key) and "")


# call records

async def calls_page(request):
    d = request.app["core"].directory
    query = {k: v for k, v in request.query.items() if v != ""}
    try:
        records = await api.call_records_apart(d, query, 100)
        error = ""
    except api.BadInput as exc:
        records, error = [], '<p class="error" id="error">%s</p>' % h(exc)
    rows = [api.record_row(r) for r in records]
    filters = "".join(field(name, label, value=query.get(name, ""))
                      for name, label in (("since", "Since (UTC)"), ("until", "Until"), ("site", "Site"),
                                          ("extension", "Extension"), ("limit", "Limit")))
    body = ('<form method="get" action="/calls" id="filter">%s<button type="submit">Show</button> '
            '<a id="csv" href="/calls.csv?%s">Export CSV</a></form>%s'
            % (filters, h(urllib.parse.urlencode(query)), error))
    body += table([("started", "started (UTC)"), ("origin", "origin"), ("caller", "caller"), ("callee", "callee"),
                   ("path", "path"), ("setup_ms", "setup ms"), ("talk_s", "talk s"), ("cause", "cause"),
                   ("uid", "uid")], rows)
    return page(request, "Call records", body, 400 if error else 200)


async def calls_csv(request):
    query = {k: v for k, v in request.query.items() if v != ""}
    text = await api.call_records_apart(request.app["core"].directory, query, api.CSV_LIMIT, api.records_csv)
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="upbx-calls.csv"'})


async def static_css(request):
    return web.Response(text=CSS, content_type="text/css", headers=HEADERS)


async def static_js(request):
    return web.Response(text=JS, content_type="application/javascript", headers=HEADERS)


def add_routes(app):
    app.middlewares.append(signed_in_only)
    r = app.router
    r.add_get("/static/admin.css", static_css)
    r.add_get("/static/admin.js", static_js)
    r.add_get("/login", login_get)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout)
    r.add_get("/", status_page)
    r.add_get("/live", live)
    r.add_get("/sites", sites_page)
    r.add_post("/sites", sites_post)
    r.add_post("/sites/{name}/remove", site_remove)
    r.add_post("/hosts", hosts_post)
    r.add_post("/hosts/{name}/remove", host_remove)
    r.add_get("/extensions", extensions_page)
    r.add_post("/extensions", extensions_post)
    for action in ("remove", "bar", "unbar"):
        r.add_post("/extensions/{number}/%s" % action, _extension_action(action))
    r.add_get("/sysinfo", sysinfo_page)
    r.add_post("/sysinfo", sysinfo_post)
    r.add_post("/sysinfo/{key}/remove", sysinfo_remove)
    r.add_get("/calls", calls_page)
    r.add_get("/calls.csv", calls_csv)
