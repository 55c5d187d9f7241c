"""`python -m tools.make_vectors --check` runs in the suite (so in CI), and can fail.

The check regenerates every vector with common/ and cross-checks the crypto against
independent implementations (the stdlib's hmac, cryptography's HKDF and AES-CTR); it
exits 1 when tests/vectors/protocol_vectors.json or docs/protocol.md's generated
sections differ from what it computes, and stops with a message when common/ and a
reference implementation disagree.
"""
import pathlib
import shutil
import subprocess
import sys

import pytest

import upbx.tools.make_vectors as make_vectors
from upbx.common import crypto

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_vectors_and_the_protocol_document_are_up_to_date_and_cross_checked():
    result = subprocess.run([sys.executable, "-m", "upbx.tools.make_vectors", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "vectors and docs/protocol.md are up to date"


def test_a_vector_file_that_differs_fails_the_check(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "protocol_vectors.json"
    shutil.copy(make_vectors.VECTORS, stale)
    monkeypatch.setattr(make_vectors, "VECTORS", stale)
    assert make_vectors.main(["--check"]) == 0
    text = stale.read_text()
    stale.write_text(text.replace('"gives_up_ms": 19750', '"gives_up_ms": 19751'))
    assert stale.read_text() != text
    monkeypatch.setattr(make_vectors, "ROOT", tmp_path)     # names the file relative to ROOT
    assert make_vectors.main(["--check"]) == 1
    assert "out of date: protocol_vectors.json" in capsys.readouterr().out


def _off_by_one_bit(fn):
    def wrong(*args, **kwargs):
        out = bytearray(fn(*args, **kwargs))
        out[-1] ^= 1
        return bytes(out)
    return wrong


def _ctr_off_by_one_bit(crypt):
    def wrong(self, nonce, buf, start, end):
        crypt(self, nonce, buf, start, end)
        if end > start:
            buf[end - 1] ^= 1
    return wrong


@pytest.mark.parametrize("what, first_case", [("hmac", "RFC 4231 case 1"), ("hkdf", "RFC 5869 case 1"),
                                              ("aes-ctr", "one block of keystream")])
def test_common_disagreeing_with_a_reference_implementation_stops_the_check(what, first_case, monkeypatch):
    if what == "hmac":
        monkeypatch.setattr(crypto, "hmac_sha256_portable", _off_by_one_bit(crypto.hmac_sha256_portable))
    elif what == "hkdf":
        monkeypatch.setattr(crypto, "hkdf", _off_by_one_bit(crypto.hkdf))
    else:
        monkeypatch.setattr(crypto.CounterMode, "crypt", _ctr_off_by_one_bit(crypto.CounterMode.crypt))
    with pytest.raises(SystemExit, match="make_vectors: %s disagrees with the reference implementation" % first_case):
        make_vectors.main(["--check"])
