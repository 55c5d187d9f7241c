"""HTTP digest authentication for SIP (RFC 7616 with RFC 3261 22.4): MD5 and SHA-256, qop=auth.

The server keeps nothing per challenge. A nonce is the time it was made and an HMAC of that
time and the client's IP address under a key the host draws at start: checking one is
recomputing the HMAC and comparing its age with NONCE_TTL_MS. A nonce from another address,
from before the host's last start, or older than its lifetime is refused; one that is only
too old gets a fresh challenge with stale=true (RFC 7616 3.3), so a phone re-authenticates
without asking its user. What this costs: within its lifetime a nonce can be used again, with
any nc (no nonce-count is kept, which would be state per challenge); an eavesdropper who
replays a whole REGISTER within those minutes re-registers the same contact, which it could
have done by replaying it anyway.
"""

import base64
import hashlib
import hmac
import os
import struct

from upbx.host.sip.message import split_outside_quotes

NONCE_TTL_MS = 5 * 60 * 1000
ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
# What a challenge offers, by default: MD5 alone. RFC 7616 3.7 has a server send one challenge per
# algorithm, preferred first, but SIP clients that know only MD5 may give up on a SHA-256
# challenge instead of skipping it (baresip 1.0 with libre 1.x: "Register: Function not
# implemented"), so offering SHA-256 is a host's choice (config key sip_digest). Credentials with
# either algorithm are accepted whatever was offered.
OFFER = ("MD5",)


def h(algorithm, text):
    return ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def response(algorithm, username, realm, password, method, uri, nonce, nc, cnonce, qop="auth"):
    """The request-digest a client sends (RFC 7616 3.4.1, qop=auth)."""
    ha1 = h(algorithm, "%s:%s:%s" % (username, realm, password))
    ha2 = h(algorithm, "%s:%s" % (method, uri))
    return h(algorithm, "%s:%s:%s:%s:%s:%s" % (ha1, nonce, nc, cnonce, qop, ha2))


def parse_credentials(value):
    """'Digest k=v, k="v", ...' as (scheme lowered, {k lowered: v}); ValueError if malformed."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    params = {}
    for item in split_outside_quotes(rest, ","):
        name, eq, v = item.partition("=")
        name, v = name.strip(" \t").lower(), v.strip(" \t")
        if not eq or not name:
            raise ValueError("auth parameter %r" % item[:40])
        if v.startswith('"'):
            if len(v) < 2 or not v.endswith('"'):
                raise ValueError("auth parameter %r" % item[:40])
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[name] = v
    return scheme.lower(), params


class Authenticator:
    """Challenges and checks credentials; knows passwords through password_of(username)."""

    def __init__(self, realm, password_of, key=None, ttl_ms=NONCE_TTL_MS, offer=OFFER):
        self.realm = realm
        self.offer = tuple(offer)
        self.password_of = password_of
        self.key = key or os.urandom(32)
        self.ttl_ms = ttl_ms

    def nonce(self, ip, now):
        stamp = struct.pack(">q", now)
        tag = hmac.new(self.key, stamp + ip.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp + tag).decode().rstrip("=")

    def _nonce_age(self, nonce, ip, now):
        """Age in ms of a nonce this host made for ip, or None if it did not make it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 24:
            return None
        expected = hmac.new(self.key, raw[:8] + ip.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(expected, raw[8:]):
            return None
        age = now - struct.unpack(">q", raw[:8])[0]
        return age if age >= 0 else None

    def challenges(self, ip, now, stale=False):
        """WWW-Authenticate values, one per algorithm offered, preferred first."""
        nonce = self.nonce(ip, now)
        return ['Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"%s'
                % (self.realm, nonce, algorithm, ", stale=true" if stale else "") for algorithm in self.offer]

    def check(self, request, header_value, ip, now):
        """("ok", username), ("stale", username) or ("fail", why) for one Authorization value."""
        try:
            scheme, p = parse_credentials(header_value)
        except ValueError as e:
            return "fail", str(e)
        if scheme != "digest":
            return "fail", "scheme %s" % scheme
        algorithm = p.get("algorithm", "MD5").upper()
        if algorithm not in ALGORITHMS:
            return "fail", "algorithm %s" % algorithm
        missing = [k for k in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce") if k not in p]
        if missing:
            return "fail", "no %s" % missing[0]
        if p["realm"] != self.realm or p["qop"] != "auth":
            return "fail", "realm or qop"
        age = self._nonce_age(p["nonce"], ip, now)
        if age is None:
            return "fail", "not our nonce"
        password = self.password_of(p["username"])
        if password is None:
            return "fail", "unknown user"
        expected = response(algorithm, p["username"], self.realm, password, request.method, p["uri"],
                            p["nonce"], p["nc"], p["cnonce"])
        if not hmac.compare_digest(expected, p["response"].lower()):
            return "fail", "wrong response"
        if age > self.ttl_ms:
            return "stale", p["username"]
        return "ok", p["username"]
