"""How a host daemon starts and stops, seen from outside: a UDP port already taken ends `upbx main` /
`upbx remote` with one line naming the port and the config key (docs/hosts.md)."""
import socket
import subprocess
import sys

from upbx.tools.lab import ROOT, free_port


def _run(table, config):
    return subprocess.run([sys.executable, "-m", "upbx.tools.cli", table, "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_udp_port_in_use_ends_the_daemon_with_one_line_naming_the_key(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        main = tmp_path / "main.toml"
        main.write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = ":memory:"\n' % port)
        out = _run("main", main)
        assert out.returncode == 1, out
        assert out.stderr == "upbx main: %s: key 'main.listen': cannot listen on UDP 127.0.0.1:%d: Address already " \
                             "in use\n" % (main, port)
        main.write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = ":memory:"\nworkers = 2\n' % port)
        out = _run("main", main)   # relay workers probe the port first: the same line
        assert out.returncode == 1 and out.stderr.startswith("upbx main: %s: key 'main.listen': cannot listen" % main)
        remote = tmp_path / "remote.toml"
        remote.write_text('[remote]\nname = "site-a"\nsecret = "%s"\nmain = "127.0.0.1:%d"\nlisten = "127.0.0.1:%d"\n'
                          'records_database = "%s"\ndirectory_cache = "%s"\n'
                          % ("ab" * 16, free_port(), port, tmp_path / "r.sqlite", tmp_path / "r.cache.json"))
        remote.chmod(0o600)   # it holds a secret (else a warning comes first)
        out = _run("remote", remote)
        assert out.returncode == 1, out
        assert out.stderr == "upbx remote: %s: key 'remote.listen': cannot listen on UDP 127.0.0.1:%d: Address " \
                             "already in use\n" % (remote, port)
    assert "Traceback" not in out.stderr
