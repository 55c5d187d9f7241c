"""`upbx admin ext add --sip` and `ext sip`: a SIP password printed once, stored with the
extension's other secrets, and accepted by the host's SIP edge."""
import json

from upbx.host.core import Stats
from upbx.host.directory import Directory
from upbx.host.sip import digest, message
from upbx.host.sip.edge import SipEdge
from upbx.tools.cli import main as upbx


def run(capsys, database, *argv):
    code = upbx(["admin", "--database", database] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ext_add_sip_prints_a_password_the_edge_accepts(tmp_path, capsys):
    db = str(tmp_path / "main.sqlite")
    assert run(capsys, db, "site", "add", "a")[0] == 0
    code, out, err = run(capsys, db, "ext", "add", "105", "--site", "a", "--sip")
    assert code == 0 and "SIP password (user name 105, realm upbx), shown only this once" in err
    password = out.strip()
    assert len(password) == 20 and password.isalnum()
    assert run(capsys, db, "ext", "add", "106", "--site", "a")[0] == 0
    with Directory(db) as d:
        assert d.sip_password("105") == password and d.sip_password("106") is None
        assert d.sip_passwords("a") == {"105": password}
        edge = SipEdge("upbx", d.sip_password, Stats())
        req = message.Request("REGISTER", "sip:upbx", [
            ("Via", "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa"), ("From", "<sip:105@upbx>;tag=1"),
            ("To", "<sip:105@upbx>"), ("Call-ID", "c"), ("CSeq", "1 REGISTER"),
            ("Contact", "<sip:105@10.0.0.5>")])
        edge.receive_datagram(req.encode(), ("10.0.0.5", 5060), 1000)
        [(data, _)] = edge.datagrams_to_send()
        p = digest.parse_credentials(message.parse(data).values("WWW-Authenticate")[0])[1]
        resp = digest.response("MD5", "105", "upbx", password, "REGISTER", "sip:upbx", p["nonce"], "00000001", "x")
        req.add("Authorization", 'Digest username="105", realm="upbx", nonce="%s", uri="sip:upbx", '
                'response="%s", algorithm=MD5, cnonce="x", qop=auth, nc=00000001' % (p["nonce"], resp))
        edge.receive_datagram(req.encode(), ("10.0.0.5", 5060), 1100)
        [(data, _)] = edge.datagrams_to_send()
        assert message.parse(data).status == 200
    # a new password replaces the old; --off ends it; removing the extension removes it
    code, out, _ = run(capsys, db, "ext", "sip", "105")
    assert code == 0 and out.strip() != password
    with Directory(db) as d:
        assert d.sip_password("105") == out.strip()
    assert run(capsys, db, "ext", "sip", "105", "--off")[0] == 0
    code, _, err = run(capsys, db, "ext", "sip", "105", "--off")
    assert code == 1 and "has no SIP password" in err
    code, out, _ = run(capsys, db, "ext", "sip", "106")
    assert code == 0
    assert run(capsys, db, "ext", "remove", "106")[0] == 0
    with Directory(db) as d:
        assert d.sip_passwords() == {}
    code, _, err = run(capsys, db, "ext", "sip", "999")
    assert code == 1 and "unknown extension" in err
