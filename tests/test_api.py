"""The main host's JSON API (issue 15, item 1): real HTTP requests to a real main host daemon.

One exchange for the module: the main host with `api_listen` on loopback, site a's remote host,
site b's never started, phone 301 straight at the main host, and a call 101 -> 301 in progress
while the live status is read. Every refusal is checked against the database afterwards:
nothing written.
"""
import csv
import datetime
import html
import io
import json
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from upbx.host.directory import Directory
from upbx.tools.lab import ROOT, LoopbackExchange, free_port, write_noise_wav


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_api(base, method, path, token=None, body=None, raw=None, context=None, timeout=20):
    """(status, headers, body as JSON or text) of one HTTP request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            status, headers, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, payload = exc.code, exc.headers, exc.read()
    text = payload.decode()
    if headers.get("Content-Type", "").startswith("application/json"):
        return status, headers, json.loads(text)
    return status, headers, text


class Api:
    def __init__(self, lab, port):
        self.lab = lab
        self.base = "http://127.0.0.1:%d" % port
        self.admin_token = lab.admin("token", "add", "ops", "--role", "admin")
        self.viewer_token = lab.admin("token", "add", "wallboard", "--role", "viewer")

    def __call__(self, method, path, body=None, token="admin", raw=None):
        token = {"admin": self.admin_token, "viewer": self.viewer_token}.get(token, token)
        return call_api(self.base, method, path, token, body, raw)

    def snapshot(self):
        """Everything the API can write, read from the database itself."""
        with Directory(self.lab.path("main.sqlite")) as d:
            return (d.sysinfo(), d.sites(), d.remote_hosts(), d.extensions(), d.groups(),
                    {e.number: d.features(e.number) for e in d.extensions()})


@pytest.fixture(scope="module")
def api():
    port = free_tcp_port()
    # keepalives every 2 s, a silent host logged out after 8 s: a stopped site goes down within the test
    with LoopbackExchange(main_settings={"api_listen": "127.0.0.1:%d" % port, "keepalive_timeout_s": 8},
                          remote_settings={"keepalive_s": 2}) as lab:
        lab.provision()
        lab.remote_sites = ("a",)          # site b has a remote host that never logs in: down
        lab.start()
        yield Api(lab, port)


def test_tokens_are_printed_once_and_stored_hashed(api):
    assert api.admin_token.startswith("upbx_") and len(api.admin_token) > 40
    db = sqlite3.connect(api.lab.path("main.sqlite"))
    rows = db.execute("SELECT name, role, hash FROM api_tokens ORDER BY name").fetchall()
    db.close()
    assert [(n, r) for n, r, _h in rows] == [("ops", "admin"), ("wallboard", "viewer")]
    with open(api.lab.path("main.sqlite"), "rb") as f:
        assert api.admin_token.encode() not in f.read()
    listed = json.loads(api.lab.admin("token", "list", "--json"))
    assert [t["name"] for t in listed] == ["ops", "wallboard"] and "upbx_" not in json.dumps(listed)


def test_requests_without_a_valid_token_are_refused(api):
    for token in (None, "", "upbx_" + "A" * 43, api.admin_token[:-1], "Basic " + api.admin_token):
        status, headers, body = call_api(api.base, "GET", "/api/sites", token)
        assert status == 401, token
        assert headers["WWW-Authenticate"].startswith("Bearer") and "token" in body["error"]
    status, _h, _b = api("POST", "/api/sites", {"name": "sneaky"}, token="upbx_nope")
    assert status == 401
    assert all(s.name != "sneaky" for s in api.snapshot()[1])
    # a token removed while the daemon runs is refused from the next request on
    temporary = api.lab.admin("token", "add", "temp", "--role", "viewer")
    assert api("GET", "/api/sites", token=temporary)[0] == 200
    api.lab.admin("token", "remove", "temp")
    assert api("GET", "/api/sites", token=temporary)[0] == 401


def test_a_viewer_reads_and_cannot_write(api):
    before = api.snapshot()
    status, _h, who = api("GET", "/api/whoami", token="viewer")
    assert (status, who) == (200, {"name": "wallboard", "role": "viewer"})
    for path in ("/api/sites", "/api/hosts", "/api/extensions", "/api/groups", "/api/sysinfo", "/api/calls",
                 "/api/status", "/api/moh", "/api/extensions/101", "/api/voicemail/101"):
        assert api("GET", path, token="viewer")[0] == 200, path
    writes = [("POST", "/api/sites", {"name": "x"}), ("DELETE", "/api/sites/c", None),
              ("POST", "/api/extensions", {"number": "999", "site": "a"}), ("DELETE", "/api/extensions/101", None),
              ("PATCH", "/api/extensions/101", {"barred": True}), ("PUT", "/api/extensions/101/dnd", {"on": True}),
              ("PUT", "/api/sysinfo/announcement", {"value": "x"}), ("POST", "/api/hosts", {"name": "h", "site": "c"}),
              ("POST", "/api/groups", {"number": "600", "members": ["101"]})]
    for method, path, body in writes:
        status, _h, answer = api(method, path, body, token="viewer")
        assert status == 403 and "viewer" in answer["error"], (method, path)
    assert api.snapshot() == before


def test_sites_hosts_and_extensions_through_admins_validation(api):
    status, _h, site = api("POST", "/api/sites", {"name": "north", "uplink_kbps": 512, "local_calls": False})
    assert status == 201 and site == {"name": "north", "uplink_kbps": 512, "local_calls": False,
                                      "local_call_quota": 0}
    status, _h, host = api("POST", "/api/hosts", {"name": "north-pi", "site": "north"})
    assert status == 201 and len(bytes.fromhex(host["secret"])) == 16
    status, _h, ext = api("POST", "/api/extensions", {"number": "401", "site": "north", "name": "Front desk"})
    assert status == 201 and (ext["number"], ext["site"], ext["name"]) == ("401", "north", "Front desk")
    with Directory(api.lab.path("main.sqlite")) as d:
        # the secret returned once is the one the directory authenticates the phone with
        assert d.extension("401").secret.hex() == ext["secret"]
        assert d.remote_host("north-pi").secret.hex() == host["secret"]
    # a SIP phone's extension: its SIP password is in the answer, once, as `upbx admin ext add --sip` prints it
    status, _h, sip = api("POST", "/api/extensions", {"number": "402", "site": "north", "sip": True})
    assert status == 201 and "secret" in sip
    with Directory(api.lab.path("main.sqlite")) as d:
        assert sip["sip_password"] == d.sip_password("402") and d.sip_password("401") is None
    assert api("POST", "/api/extensions", {"number": "403", "site": "north", "sip": "yes"})[2]["field"] == "sip"
    assert api("DELETE", "/api/extensions/402")[0] == 200
    listed = api("GET", "/api/extensions?site=north")[2]
    assert listed == [{"number": "401", "site": "north", "name": "Front desk", "barred": False}]
    assert "secret" not in json.dumps(api("GET", "/api/extensions")[2] + api("GET", "/api/hosts")[2])
    assert api("PATCH", "/api/extensions/401", {"barred": True})[2] == {"number": "401", "barred": True}
    assert api("PUT", "/api/extensions/401/forward", {"kind": "busy", "target": "101"})[2]["busy"] == "101"
    assert api("PUT", "/api/extensions/401/dnd", {"on": True})[2]["dnd"] is True
    assert api("GET", "/api/extensions/401")[2]["features"]["busy"] == "101"
    status, _h, group = api("POST", "/api/groups", {"number": "600", "members": ["101", "102"], "ring_s": 20})
    assert status == 201 and group["members"] == ["101", "102"] and group["strategy"] == "ring-all"
    assert api("PATCH", "/api/groups/600", {"strategy": "hunt"})[2]["strategy"] == "hunt"
    assert api("DELETE", "/api/groups/600")[0] == 200
    version = api("PUT", "/api/sysinfo/settings.speed_dial", {"value": "A=101"})[2]["version"]
    assert api("GET", "/api/sysinfo")[2] == {"version": version, "data": {"settings": {"speed_dial": "A=101"}}}
    # refusals the directory makes while writing: conflicts 409, unknown objects 404
    assert api("POST", "/api/sites", {"name": "north"})[0] == 409
    assert api("DELETE", "/api/sites/north")[0] == 409     # it still has a host and an extension
    assert api("DELETE", "/api/extensions/4444")[0] == 404
    for path in ("/api/extensions/401", "/api/hosts/north-pi", "/api/sites/north"):
        assert api("DELETE", path)[0] == 200, path
    assert api("GET", "/api/extensions/401")[0] == 404


BAD_INPUT = [
    ("POST", "/api/extensions", {"number": "12a", "site": "a"}, "number"),
    ("POST", "/api/extensions", {"number": "1234567890123456", "site": "a"}, "number"),
    ("POST", "/api/extensions", {"number": "150", "site": "nowhere"}, "site"),
    ("POST", "/api/extensions", {"number": "150", "site": "a", "name": "x" * 64}, "name"),
    ("POST", "/api/extensions", {"number": 150, "site": "a"}, "number"),
    ("POST", "/api/extensions", {"site": "a"}, "number"),
    ("POST", "/api/extensions", {"number": "150", "site": "a", "colour": "red"}, "colour"),
    ("POST", "/api/sites", {"name": "bad name!"}, "name"),
    ("POST", "/api/sites", {"name": "ok", "uplink_kbps": "512"}, "uplink_kbps"),
    ("POST", "/api/sites", {"name": "ok", "uplink_kbps": -1}, "uplink_kbps"),
    ("POST", "/api/sites", {"name": "ok", "local_calls": "no"}, "local_calls"),
    ("POST", "/api/hosts", {"name": "main", "site": "c"}, None),   # reserved: the directory says so
    ("POST", "/api/hosts", {"name": "pi", "site": "nowhere"}, "site"),
    ("PUT", "/api/extensions/101/forward", {"kind": "sideways", "target": "102"}, "kind"),
    ("PUT", "/api/extensions/101/forward", {"kind": "always", "target": "999"}, "target"),
    ("PUT", "/api/extensions/101/forward", {"kind": "busy", "target": "102", "after": 20}, "after"),
    ("PUT", "/api/extensions/101/forward", {"kind": "noanswer", "target": "102", "after": 1}, None),
    ("PATCH", "/api/extensions/101", {"barred": "yes"}, "barred"),
    ("POST", "/api/groups", {"number": "601", "members": ["101", "nobody"]}, "members"),
    ("POST", "/api/groups", {"number": "602", "members": "101"}, "members"),
    ("PUT", "/api/sysinfo/colour", {"value": "red"}, "key"),
    ("PUT", "/api/sysinfo/announcement", {"value": 5}, "value"),
]


@pytest.mark.parametrize("method, path, body, field", BAD_INPUT)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(api, method, path, body, field):
    before = api.snapshot()
    status, _h, answer = api(method, path, body)
    assert status == 400, answer
    assert answer["error"]
    if field is not None:
        assert answer["field"] == field and field in answer["error"] or answer["field"] == field, answer
    assert api.snapshot() == before


def test_a_body_that_is_not_a_json_object_is_400(api):
    before = api.snapshot()
    assert api("POST", "/api/sites", raw=b"name=x")[0] == 400
    assert api("POST", "/api/sites", raw=b'["x"]')[0] == 400
    assert api.snapshot() == before


def _ms(text):
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_call_records_filtered_by_time_site_and_extension_and_exported_as_csv(api):
    with Directory(api.lab.path("main.sqlite")) as d:
        for uid, origin, caller, callee, started in (
                ("aa01", "main", "301", "302", "2026-03-01T10:00:00"),
                ("aa02", "site-a", "101", "102", "2026-03-01T11:00:00"),
                ("aa03", "main", "101", "201", "2026-03-02T09:00:00"),
                ("aa04", "main", "202", "302", "2026-03-03T09:00:00")):
            d.add_call_record({"uid": uid, "origin": origin, "caller": caller, "callee": callee, "path": "relay",
                               "started_ms": _ms(started), "answered_ms": _ms(started) + 1000,
                               "ended_ms": _ms(started) + 61500, "cause": "normal", "setup_ms": 120})

    def uids(query):
        status, _h, records = api("GET", "/api/calls?" + query)
        assert status == 200, records
        return [r["uid"] for r in records if r["uid"].startswith("aa")]

    assert uids("since=2026-03-01&until=2026-03-03") == ["aa03", "aa02", "aa01"]
    assert uids("since=2026-03-01T10:30:00Z&until=2026-03-02") == ["aa02"]
    assert uids("site=a&since=2026-01-01") == ["aa03", "aa02"]          # 101 is site a's; site-a is its host
    assert uids("site=b&since=2026-01-01") == ["aa04", "aa03"]
    assert uids("extension=302&since=2026-01-01") == ["aa04", "aa01"]
    assert uids("extension=302&site=b&since=2026-01-01") == ["aa04"]
    assert uids("since=2026-01-01&limit=1") == ["aa04"]
    for query, field in (("since=yesterday", "since"), ("until=2026-13-01", "until"), ("site=nowhere", "site"),
                         ("extension=abc", "extension"), ("limit=0", "limit"), ("colour=red", "colour")):
        status, _h, answer = api("GET", "/api/calls?" + query)
        assert (status, answer["field"]) == (400, field), query
    status, headers, text = api("GET", "/api/calls.csv?site=a&since=2026-03-01&until=2026-03-04", token="viewer")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["uid"], r["caller"], r["callee"], r["started"], r["talk_s"]) for r in rows] == [
        ("aa03", "101", "201", "2026-03-02T09:00:00Z", "60.5"), ("aa02", "101", "102", "2026-03-01T11:00:00Z", "60.5")]


def test_live_status_shows_sites_phones_and_a_call_in_progress_with_its_path_and_bandwidth(api):
    lab = api.lab
    wav = lab.path("101.wav")
    write_noise_wav(wav, 10, 101)
    callee = lab.phone("301", "--answer", "--exit-after-call", "--exit-after", "25", tag="api-callee")
    lab.wait_registered("301")
    caller = lab.phone("101", "--send", wav, "--call", "301", "--duration", "5", "--exit-after-call",
                       "--exit-after", "25", tag="api-caller")
    try:
        lab.wait_for(lambda: any(c["state"] == "answered" for c in api("GET", "/api/status")[2]["calls"]),
                     "the call answered, in the API's status", timeout=30)
        time.sleep(1.3)   # more than the bandwidth meter's 1 s window
        status, _h, live = api("GET", "/api/status", token="viewer")
    finally:
        caller.wait(30)
        callee.wait(30)
    assert status == 200
    sites = {s["name"]: s for s in live["sites"]}
    assert sites["a"]["up"] is True and sites["a"]["remote_host"] == "site-a"
    assert sites["a"]["address"] == "127.0.0.1:%d" % lab.remote_ports["a"]
    seen = datetime.datetime.strptime(sites["a"]["last_seen"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - seen).total_seconds()) < 60
    assert sites["b"]["up"] is False and sites["b"]["address"] is None and sites["b"]["last_seen"] is None
    assert sites["c"]["up"] is True and sites["c"]["phones"] == 1 and sites["c"]["remote_host"] is None
    # 301 at the main host; 101 registered at site-a, which told the main host (PHONE_STATE)
    assert [(p["extension"], p["site"], p["via"]) for p in live["phones"]] == [("301", "c", None), ("101", "a", "site-a")]
    assert sites["a"]["phones"] == 1 and live["phones"][1]["address"] is None
    (call,) = live["calls"]
    assert (call["caller"], call["callee"], call["state"], call["path"]) == ("101", "301", "answered", "relay")
    assert sites["a"]["bandwidth"]["out_kbps"] > 50 and sites["c"]["bandwidth"]["out_kbps"] > 50
    # after the call: its record, with the path, through the API
    lab.wait_for(lambda: any(r["caller"] == "101" and r["callee"] == "301" for r in
                             api("GET", "/api/calls?extension=301")[2]), "the call's record")
    record = next(r for r in api("GET", "/api/calls?extension=301")[2] if r["caller"] == "101")
    assert record["path"] == "relay" and record["cause"] == "normal clearing"


def test_sites_whose_host_or_phones_are_gone_are_down_with_their_last_address_and_time(api):
    lab = api.lab
    lab.kill("site-a")   # gone without a word: the main host logs it out after keepalive_timeout_s
    lab.wait_for(lambda: not next(s for s in api("GET", "/api/status")[2]["sites"] if s["name"] == "a")["up"],
                 "site a down", timeout=60)
    live = api("GET", "/api/status")[2]
    sites = {s["name"]: s for s in live["sites"]}
    assert sites["a"]["address"] == "127.0.0.1:%d" % lab.remote_ports["a"] and sites["a"]["last_seen"] is not None
    # its phones are no longer known to be registered anywhere the main host can tell
    assert sites["a"]["phones"] == 0 and not [p for p in live["phones"] if p["via"] == "site-a"]
    # site c's only phone logged out when its call ended: down, last seen then
    assert sites["c"]["up"] is False and sites["c"]["phones"] == 0 and sites["c"]["last_seen"] is not None


# the listener: HTTPS with a certificate, plain HTTP on loopback only

def _main_toml(tmp_path, extra):
    (tmp_path / "main.toml").write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "main.sqlite"\n' % free_port()
                                        + extra)
    return str(tmp_path / "main.toml")


def _upbx_main(config, timeout=180):
    # the bound is for a daemon that hangs instead of exiting; on a busy machine the start alone (imports,
    # the relay workers' fork, the database) took 18 s
    return subprocess.run([sys.executable, "-m", "upbx.tools.cli", "main", "--config", config], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_plain_http_elsewhere_than_loopback_is_refused_with_a_clear_error(tmp_path):
    config = _main_toml(tmp_path, 'api_listen = "0.0.0.0:8443"\n')
    out = _upbx_main(config)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "upbx main: %s: key 'main.api_listen': plain HTTP is served on loopback only (127.0.0.1, localhost), "
        "got \"0.0.0.0:8443\"; set api_certificate (and api_private_key) for HTTPS" % config)
    config = _main_toml(tmp_path, 'api_listen = "127.0.0.1:8443"\napi_certificate = "missing.pem"\n')
    out = _upbx_main(config)
    assert out.returncode == 2 and "key 'main.api_certificate': cannot load" in out.stderr


def test_a_port_in_use_stops_the_main_host_with_the_key_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _main_toml(tmp_path, 'api_listen = "127.0.0.1:%d"\n' % port)
        out = _upbx_main(config)
    assert out.returncode == 1 and "key 'main.api_listen': cannot listen on 127.0.0.1:%d" % port in out.stderr


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upbx test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "api.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "api.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))


def test_https_with_a_configured_certificate(tmp_path):
    _self_signed(tmp_path)
    port = free_tcp_port()
    config = _main_toml(tmp_path, 'api_listen = "127.0.0.1:%d"\napi_certificate = "api.crt"\n'
                                  'api_private_key = "api.key"\n' % port)
    token = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "admin", "--config", config, "token", "add",
                            "ops", "--role", "admin"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    proc = subprocess.Popen([sys.executable, "-m", "upbx.tools.cli", "main", "--config", config], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "api.crt"))
        base = "https://127.0.0.1:%d" % port
        deadline = time.time() + 60
        while True:
            try:
                status, _h, who = call_api(base, "GET", "/api/whoami", token, context=context)
                break
            except urllib.error.URLError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.1)
        assert (status, who) == (200, {"name": "ops", "role": "admin"})
        status, _h, _b = call_api(base, "POST", "/api/sites", token, {"name": "tls"}, context=context)
        assert status == 201
        # the same port does not answer plain HTTP
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            call_api("http://127.0.0.1:%d" % port, "GET", "/api/whoami", token)
    finally:
        proc.terminate()
        proc.wait(20)
    with Directory(str(tmp_path / "main.sqlite")) as d:
        assert d.site("tls") is not None


def http_client_errors():
    import http.client
    return http.client.HTTPException


# the web page on the same listener, without a browser (tests/test_web_admin.py drives one)

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def web_request(api, method, path, token=None, form=None):
    """(status, headers, text) of a page request with the sign-in cookie for token, if any."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(api.base + path, data=data, method=method)
    if token is not None:
        req.add_header("Cookie", "upbx_token=" + token)
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=20) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def test_the_web_page_signs_in_and_refuses_viewers_changes_and_forged_forms(api):
    from upbx.host.web import csrf
    status, headers, _t = web_request(api, "GET", "/extensions")
    assert status == 302 and headers["Location"] == "/login"
    assert web_request(api, "GET", "/live")[0] == 401
    status, headers, text = web_request(api, "POST", "/login", form={"token": "upbx_wrong"})
    assert status == 401 and "not valid" in text and "Set-Cookie" not in headers
    status, headers, _t = web_request(api, "POST", "/login", form={"token": api.viewer_token})
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("upbx_token=%s;" % api.viewer_token) and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # nothing from anywhere but this listener, and the browser is told so
    for path in ("/", "/sites", "/extensions", "/sysinfo", "/calls"):
        status, headers, text = web_request(api, "GET", path, api.viewer_token)
        assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'self'"), path
        assert "add-extension" not in text and "<button type=\"submit\" id=\"remove" not in text, path
        for ref in re.findall(r'(?:src|href|action)="([^"]*)"', text):
            assert ref.startswith("/"), (path, ref)
    before = api.snapshot()
    form = {"number": "360", "site": "c", "name": "Hall"}
    assert web_request(api, "POST", "/extensions", api.viewer_token, dict(form, csrf=csrf(api.viewer_token)))[0] == 403
    assert web_request(api, "POST", "/extensions", api.admin_token, form)[0] == 403          # no form value
    assert web_request(api, "POST", "/extensions", api.admin_token, dict(form, csrf="0" * 32))[0] == 403
    assert api.snapshot() == before
    status, _h, text = web_request(api, "POST", "/extensions", api.admin_token, dict(form, csrf=csrf(api.admin_token)))
    assert status == 200 and 'id="ext-360"' in text and 'id="secret"' in text
    status, _h, text = web_request(api, "POST", "/sites", api.admin_token,
                                   {"name": "west", "uplink_kbps": "lots", "csrf": csrf(api.admin_token)})
    assert status == 400 and html.escape("field 'uplink_kbps': expected an integer, got 'lots' (uplink_kbps)") in text
    assert 'id="add-site"' in text and 'id="site-west"' not in text
    assert api("DELETE", "/api/extensions/360")[0] == 200
    # what the directory holds is shown as text, never as markup
    assert api("POST", "/api/extensions", {"number": "361", "site": "c", "name": "<script>x()</script>"})[0] == 201
    text = web_request(api, "GET", "/extensions", api.viewer_token)[2]
    assert "<script>x()" not in text and "&lt;script&gt;x()&lt;/script&gt;" in text
    assert api("DELETE", "/api/extensions/361")[0] == 200
    # sites and system information through their forms, as an admin
    token = api.admin_token
    status, _h, text = web_request(api, "POST", "/sites", token, {"name": "west", "uplink_kbps": "256",
                                                                  "local_calls": "1", "csrf": csrf(token)})
    assert status == 200 and 'id="site-west"' in text
    status, _h, text = web_request(api, "POST", "/sysinfo", token, {"key": "announcement", "value": "Fire drill",
                                                                    "csrf": csrf(token)})
    assert status == 200 and 'id="sysinfo-announcement"' in text
    with Directory(api.lab.path("main.sqlite")) as d:
        assert d.site("west") == ("west", 256, True, 0) and d.sysinfo()[1]["announcement"] == "Fire drill"
    for path in ("/sites/west/remove", "/sysinfo/announcement/remove"):
        assert web_request(api, "POST", path, token, {"csrf": csrf(token)})[0] == 200
    with Directory(api.lab.path("main.sqlite")) as d:
        assert d.site("west") is None and "announcement" not in d.sysinfo()[1]


def test_the_relay_keeps_relaying_while_an_api_write_waits_for_a_locked_database(tmp_path):
    """An API write runs in a worker thread on a connection of its own (host/api.py, write_apart): while
    it waits for a database another process holds locked (a long `upbx admin` transaction), the daemon's
    loop goes on relaying a call's media and answering its control socket."""
    import threading
    port = free_tcp_port()
    with LoopbackExchange(str(tmp_path), direct_media=False, main_settings={"api_listen": "127.0.0.1:%d" % port}) as lab:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": ["301", "302"]})
        lab.start()
        api = Api(lab, port)
        wav = lab.path("301.wav")
        write_noise_wav(wav, 10, 301)
        callee = lab.phone("302", "--answer", "--exit-after-call", "--exit-after", "40", tag="callee")
        lab.wait_registered("302")
        caller = lab.phone("301", "--send", wav, "--call", "302", "--duration", "8", "--exit-after-call",
                           "--exit-after", "40", tag="caller")
        result = {}
        try:
            lab.wait_for(lambda: any(c["state"] == "answered" for c in api("GET", "/api/status")[2]["calls"]),
                         "the call answered", timeout=30)
            lock = sqlite3.connect(lab.path("main.sqlite"), isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")   # the write lock, as a long `upbx admin` transaction holds it
            try:
                writer = threading.Thread(target=lambda: result.update(answer=api("POST", "/api/sites",
                                                                                  {"name": "locked"})))
                writer.start()
                time.sleep(0.5)   # the request is in: its write waits for the lock (SQLite's busy timeout, 10 s)
                before = lab.status("main")["stats"]["counters"]["media in"]
                lab.wait_for(lambda: lab.status("main")["stats"]["counters"]["media in"] >= before + 25,
                             "frames relayed while the write waits", timeout=6)
                assert writer.is_alive() and "answer" not in result   # still waiting, and nothing written
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            writer.join(20)
        finally:
            caller.wait(40)
            callee.wait(40)
        assert result["answer"][0] == 201, result
        with Directory(lab.path("main.sqlite")) as d:
            assert "locked" in [s.name for s in d.sites()]
