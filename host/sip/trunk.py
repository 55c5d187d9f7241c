"""SIP trunks at the main host: the provider's line (issue 13 item 2).

Stored in the main host's directory (tables made here): trunks (name, proxy HOST:PORT, user,
password, register), outbound routes (a dialled prefix -> a trunk, digits stripped first) and
inbound numbers (a DID -> an extension, group or auto-attendant number). At run time
(`Trunks`, sans-IO, held by the main host's SipCalls):

- a trunk with `register` keeps a registration at its proxy: REGISTER, the provider's digest
  challenge answered (RFC 7616 client side, MD5 or SHA-256), refreshed at half its lifetime,
  retried after 30 s when refused or unanswered;
- a number that starts with a route's prefix goes out on the route's trunk: the main host offers
  the call to the trunk's link (host/sip/calls.py sends the INVITE and answers the provider's
  401/407 once with the trunk's credentials);
- an INVITE from a trunk's proxy address is the provider's (trunks are trusted by address, as
  providers do not answer challenges): its Request-URI user (or To user) is looked up among the
  DIDs and the call rings that number, with the caller's number from the From header.

A trunk added with `--site S` is that site's own line (an analogue gateway on its LAN, say): the
main host never uses it; it goes to the site's remote host with the site's directory, with the
routes (prefix and strip) and the DIDs that ring the site's numbers, and the remote host uses it
for the site's outside calls while the main host is unreachable (B4, as Cisco SRST falls back to
local lines) and takes calls in from it at any time (docs/sip.md, "A site's own trunk").
"""

import os
import re

from upbx.host.directory import DirectoryError, check_number
from upbx.host.sip import digest
from upbx.host.sip import message as sip

SCHEMA = """
CREATE TABLE IF NOT EXISTS sip_trunks (
    name TEXT PRIMARY KEY, proxy TEXT NOT NULL, user TEXT NOT NULL, password TEXT NOT NULL,
    register INTEGER NOT NULL DEFAULT 0, site TEXT
);
CREATE TABLE IF NOT EXISTS sip_routes (
    prefix TEXT PRIMARY KEY, trunk TEXT NOT NULL REFERENCES sip_trunks(name) ON DELETE CASCADE,
    strip INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sip_dids (
    number TEXT PRIMARY KEY, target TEXT NOT NULL
);
"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_PROXY = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5})$")
REGISTER_S = 600
RETRY_MS = 30000


def _tables(d):
    for statement in SCHEMA.split(";"):
        if statement.strip():
            d.db.execute(statement)
    if "site" not in [row[1] for row in d.db.execute("PRAGMA table_info(sip_trunks)")]:
        d.db.execute("ALTER TABLE sip_trunks ADD COLUMN site TEXT")   # a directory from before site trunks


def add_trunk(d, name, proxy, user, password, register=False, site=None):
    _tables(d)
    if site is not None:
        if d.site(site) is None:
            raise DirectoryError("--site %s: no such site" % site)
        if d.remote_host_of_site(site) is None:
            raise DirectoryError("--site %s: the site has no remote host to run its own trunk (its phones' "
                                 "outside calls go through the main host's trunks)" % site)
    if not _NAME.match(name or ""):
        raise DirectoryError("bad trunk name %r: letters, digits, _ . - (up to 32)" % (name,))
    m = _PROXY.match(proxy or "")
    if not m or int(m.group(2)) > 65535:
        raise DirectoryError("bad --proxy %r: use IPV4:PORT (the provider's address, e.g. 192.0.2.10:5060)" % (proxy,))
    if not user or not password or any(c in user + password for c in '"\\\r\n'):
        raise DirectoryError("trunk %s: --user and --password must be non-empty, without quotes" % name)
    if d._one("SELECT 1 FROM sip_trunks WHERE name = ?", (name,)):
        raise DirectoryError("trunk %s already exists" % name)
    d.db.execute("INSERT INTO sip_trunks (name, proxy, user, password, register, site) VALUES (?, ?, ?, ?, ?, ?)",
                 (name, proxy, user, password, 1 if register else 0, site))


def trunks(d, site=False):
    """Every trunk (site=False), the main host's own (site=None) or one site's (site="a")."""
    _tables(d)
    rows = [{"name": n, "proxy": p, "user": u, "password": pw, "register": bool(r), "site": s}
            for n, p, u, pw, r, s in d.db.execute(
                "SELECT name, proxy, user, password, register, site FROM sip_trunks ORDER BY name")]
    return rows if site is False else [r for r in rows if r["site"] == site]


def remove_trunk(d, name):
    _tables(d)
    if not d.db.execute("DELETE FROM sip_trunks WHERE name = ?", (name,)).rowcount:
        raise DirectoryError("unknown trunk %r" % (name,))


def add_route(d, prefix, trunk, strip=0):
    _tables(d)
    check_number(prefix)
    row = d._one("SELECT site FROM sip_trunks WHERE name = ?", (trunk,))
    if not row:
        raise DirectoryError("unknown trunk %r" % (trunk,))
    if row[0] is not None:
        raise DirectoryError("trunk %s is site %s's own: it takes that site's calls on every route while the main "
                             "host is unreachable; a route names one of the main host's trunks" % (trunk, row[0]))
    if not 0 <= strip <= len(prefix):
        raise DirectoryError("--strip %d: between 0 and the prefix's %d digits" % (strip, len(prefix)))
    if d.extension(prefix) is not None or d.group(prefix) is not None:
        raise DirectoryError("prefix %s is an extension's or group's number" % prefix)
    d.db.execute("INSERT OR REPLACE INTO sip_routes VALUES (?, ?, ?)", (prefix, trunk, strip))


def routes(d):
    _tables(d)
    return [{"prefix": p, "trunk": t, "strip": s}
            for p, t, s in d.db.execute("SELECT * FROM sip_routes ORDER BY prefix")]


def remove_route(d, prefix):
    _tables(d)
    if not d.db.execute("DELETE FROM sip_routes WHERE prefix = ?", (prefix,)).rowcount:
        raise DirectoryError("no route for prefix %r" % (prefix,))


def route_for(d, number):
    """(trunk row, number to send) for a dialled number, by the longest matching prefix; or None."""
    _tables(d)
    best = None
    for r in routes(d):
        if number.startswith(r["prefix"]) and len(number) > len(r["prefix"]) - r["strip"] and (
                best is None or len(r["prefix"]) > len(best["prefix"])):
            best = r
    if best is None:
        return None
    trunk = next((t for t in trunks(d, site=None) if t["name"] == best["trunk"]), None)
    return trunk, number[best["strip"]:]


def site_part(d, site):
    """What a site's remote host gets with its directory: the site's own trunks (with their
    passwords: the cache file is 0600, as for the phones' secrets), every route's prefix and
    strip (the dial plan its phones use for outside numbers whichever trunk carries them), the
    DIDs that ring the site's extensions or the groups it runs, and the numbers of any site that
    start with a route's prefix (never outside numbers)."""
    _tables(d)
    numbers = {e.number for e in d.extensions(site)} | set(d.site_groups(site))
    inside = set()   # any site's numbers that start with a route's prefix: ours win, as at the main host
    for r in routes(d):
        for table in ("extensions", "groups"):
            inside.update(n for (n,) in d.db.execute("SELECT number FROM %s WHERE number GLOB ?" % table,
                                                     (r["prefix"] + "*",)))
    return {"trunks": [{k: t[k] for k in ("name", "proxy", "user", "password", "register")} for t in trunks(d, site)],
            "routes": [{"prefix": r["prefix"], "strip": r["strip"]} for r in routes(d)],
            "dids": {r["number"]: r["target"] for r in dids(d) if r["target"] in numbers},
            "inside": sorted(inside)}


def site_route(part, number):
    """(trunk row, number to send) of a site's own trunk for a dialled number, from site_part's
    routes: the longest matching prefix; (None, None) when a route matches but the site has no
    trunk; None when no route matches, or the number is an extension's or group's of any site
    (not an outside number)."""
    if number in (part.get("inside") or ()):
        return None
    best = None
    for r in part.get("routes") or ():
        if number.startswith(r["prefix"]) and len(number) > len(r["prefix"]) - r["strip"] and (
                best is None or len(r["prefix"]) > len(best["prefix"])):
            best = r
    if best is None:
        return None
    rows = part.get("trunks") or []
    return (rows[0] if rows else None), number[best["strip"]:]


def add_did(d, number, target):
    _tables(d)
    if not number or not (number.lstrip("+").isdigit()) or len(number) > 20:
        raise DirectoryError("bad DID %r: digits, optionally after a +" % (number,))
    check_number(target)
    d.db.execute("INSERT OR REPLACE INTO sip_dids VALUES (?, ?)", (number, target))


def dids(d):
    _tables(d)
    return [{"number": n, "target": t} for n, t in d.db.execute("SELECT * FROM sip_dids ORDER BY number")]


def remove_did(d, number):
    _tables(d)
    if not d.db.execute("DELETE FROM sip_dids WHERE number = ?", (number,)).rowcount:
        raise DirectoryError("unknown DID %r" % (number,))


def did_target(d, number):
    _tables(d)
    row = d._one("SELECT target FROM sip_dids WHERE number = ?", (number,))
    return row[0] if row else None


# upbx admin: trunk, route, did

def add_arguments(things, actions, leaf):
    trunk = actions(things, "trunk", "SIP trunks: the provider's line (docs/sip.md)")
    p = leaf(trunk, "add", "add a SIP trunk")
    p.add_argument("name")
    p.add_argument("--proxy", required=True, metavar="HOST:PORT", help="the provider's SIP address (IPv4)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--register", action="store_true", help="keep a registration at the proxy")
    p.add_argument("--site", metavar="S", help="the site's own trunk (e.g. an analogue gateway on its LAN), run by "
                   "its remote host for the site's outside calls while the main host is unreachable")
    leaf(trunk, "list", "list trunks (passwords not shown)")
    leaf(trunk, "remove", "remove a trunk and its routes").add_argument("name")
    route = actions(things, "route", "outbound routes: a dialled prefix to a trunk")
    p = leaf(route, "add", "calls to numbers starting with PREFIX go out on a trunk")
    p.add_argument("prefix")
    p.add_argument("--trunk", required=True)
    p.add_argument("--strip", type=int, default=0, metavar="N", help="digits removed from the front first")
    leaf(route, "list", "list routes")
    leaf(route, "remove", "remove a route").add_argument("prefix")
    did = actions(things, "did", "inbound numbers (DIDs) to an extension, group or auto-attendant")
    p = leaf(did, "add", "calls from a trunk to NUMBER ring TARGET")
    p.add_argument("number")
    p.add_argument("--to", required=True, dest="target", metavar="TARGET")
    leaf(did, "list", "list inbound numbers")
    leaf(did, "remove", "remove an inbound number").add_argument("number")


def handlers(done, table):
    def trunk_add(d, a):
        add_trunk(d, a.name, a.proxy, a.user, a.password, a.register, a.site)
        d._bump()   # a site's trunk goes to its remote host with the directory
        done(a, "trunk %s added (%s)%s" % (a.name, a.proxy, " for site %s" % a.site if a.site else ""),
             {"name": a.name, "proxy": a.proxy, "site": a.site})

    def trunk_remove(d, a):
        remove_trunk(d, a.name)
        d._bump()
        done(a, "trunk %s removed" % a.name, {"name": a.name})

    def route_add(d, a):
        add_route(d, a.prefix, a.trunk, a.strip)
        d._bump()   # the sites' remote hosts have the routes too (their own trunks, B4)
        done(a, "numbers starting %s go out on trunk %s (%d digits stripped)" % (a.prefix, a.trunk, a.strip),
             {"prefix": a.prefix, "trunk": a.trunk, "strip": a.strip})

    def did_add(d, a):
        add_did(d, a.number, a.target)
        d._bump()   # and the DIDs of their numbers
        done(a, "calls to %s ring %s" % (a.number, a.target), {"number": a.number, "target": a.target})

    return {
        ("trunk", "add"): trunk_add,
        ("trunk", "list"): lambda d, a: table(a, [dict(t, password=None) for t in trunks(d)],
                                              [("name", "TRUNK"), ("proxy", "PROXY"), ("user", "USER"),
                                               ("register", "REGISTER"), ("site", "SITE")]),
        ("trunk", "remove"): trunk_remove,
        ("route", "add"): route_add,
        ("route", "list"): lambda d, a: table(a, routes(d), [("prefix", "PREFIX"), ("trunk", "TRUNK"),
                                                             ("strip", "STRIP")]),
        ("route", "remove"): lambda d, a: (remove_route(d, a.prefix), d._bump(),
                                           done(a, "route %s removed" % a.prefix, {"prefix": a.prefix})),
        ("did", "add"): did_add,
        ("did", "list"): lambda d, a: table(a, dids(d), [("number", "DID"), ("target", "TARGET")]),
        ("did", "remove"): lambda d, a: (remove_did(d, a.number), d._bump(),
                                         done(a, "DID %s removed" % a.number, {"number": a.number})),
    }


# run time: registrations at the providers

class Registration:
    """One trunk's registration at its proxy (sans-IO): REGISTER, challenge, refresh."""

    def __init__(self, trunk, our_host):
        self.trunk = trunk
        self.proxy = _proxy_addr(trunk["proxy"])
        self.our_host = our_host
        self.call_id = "reg-%s@upbx" % _token()
        self.tag = _token()
        self.cseq = 0
        self.state = "idle"          # idle, registering, registered, failed
        self.next_at = 0
        self.expires_at = None
        self.tried_auth = False

    def request(self, authorization=None):
        self.cseq += 1
        t = self.trunk
        host = t["proxy"].split(":")[0]
        headers = [("Via", "SIP/2.0/UDP %s;branch=z9hG4bK%s;rport" % (self.our_host, _token())),
                   ("Max-Forwards", "70"), ("From", "<sip:%s@%s>;tag=%s" % (t["user"], host, self.tag)),
                   ("To", "<sip:%s@%s>" % (t["user"], host)), ("Call-ID", self.call_id),
                   ("CSeq", "%d REGISTER" % self.cseq), ("Contact", "<sip:%s@%s>" % (t["user"], self.our_host)),
                   ("Expires", str(REGISTER_S)), ("User-Agent", "upbx")]
        if authorization:
            headers.append(authorization)
        return sip.Request("REGISTER", "sip:%s" % host, headers)

    def due(self, now):
        return now >= self.next_at

    def start(self, now):
        self.state = "registering"
        self.tried_auth = False
        self.next_at = now + 4000   # no answer within 4 s: start over
        return self.request()

    def response(self, resp, now):
        """What to send next (a request) or None."""
        if resp.status < 200:
            return None
        if resp.status in (401, 407) and not self.tried_auth:
            self.tried_auth = True
            return self.request(credentials(resp, "REGISTER", "sip:%s" % self.trunk["proxy"].split(":")[0],
                                            self.trunk["user"], self.trunk["password"]))
        if 200 <= resp.status < 300:
            expires = REGISTER_S
            for c in resp.contacts():
                if c.params.get("expires", "").isdigit():
                    expires = int(c.params["expires"])
            if resp.get("Expires") and resp.get("Expires").isdigit() and not resp.contacts():
                expires = int(resp.get("Expires"))
            self.state = "registered"
            self.expires_at = now + expires * 1000
            self.next_at = now + refresh_after_s(expires) * 1000
            return None
        self.state = "failed"
        self.next_at = now + RETRY_MS
        return None


def refresh_after_s(expires):
    """When to register again after a provider granted `expires` s: before the binding runs out, by a
    margin of a tenth of it, at least 5 s (a REGISTER, its challenge and a resend or two on UDP) and
    at most half of it; at least 1 s, so a provider granting (almost) nothing is not flooded.
    600 s: after 540; 60: 54; 20: 15; 12: 7; 8: 4; 1: 1."""
    margin = min(max(5, expires // 10), expires // 2)
    return max(1, expires - margin)


def credentials(challenge_response, method, uri, user, password):
    """(header name, value) answering a provider's 401/407 (RFC 7616 client side)."""
    proxy = challenge_response.status == 407
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    offered = [digest.parse_credentials(v)[1] for v in challenge_response.values(name)]
    p = next((o for o in offered if o.get("algorithm", "MD5").upper() in digest.ALGORITHMS), offered[0] if offered else {})
    algorithm = p.get("algorithm", "MD5").upper()
    cnonce = _token()
    if "auth" in [q.strip() for q in p.get("qop", "").split(",")]:
        resp = digest.response(algorithm, user, p.get("realm", ""), password, method, uri, p.get("nonce", ""),
                               "00000001", cnonce)
        value = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, '
                 'cnonce="%s", qop=auth, nc=00000001' % (user, p.get("realm", ""), p.get("nonce", ""), uri, resp,
                                                        algorithm, cnonce))
    else:   # RFC 2069 style, still what some providers send
        ha1 = digest.h(algorithm, "%s:%s:%s" % (user, p.get("realm", ""), password))
        ha2 = digest.h(algorithm, "%s:%s" % (method, uri))
        resp = digest.h(algorithm, "%s:%s:%s" % (ha1, p.get("nonce", ""), ha2))
        value = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s'
                 % (user, p.get("realm", ""), p.get("nonce", ""), uri, resp, algorithm))
    if p.get("opaque"):
        value += ', opaque="%s"' % p["opaque"]
    return ("Proxy-Authorization" if proxy else "Authorization", value)


def _proxy_addr(proxy):
    host, port = proxy.split(":")
    return host, int(port)


def _token():
    return os.urandom(6).hex()
