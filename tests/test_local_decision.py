"""B4: with the main host away, the remote host decides local calls from its cached directory
exactly as the main host would: local calls off or a barred caller -> "not permitted",
the site's quota of concurrent local calls reached -> "network busy"."""
from common import wire
from host.config import load_remote_config
from host.remote import RemoteHost


def _remote(tmp_path, cache):
    path = tmp_path / "remote.toml"
    path.write_text('[remote]\nname = "site-a"\nsecret = "%s"\nmain = "127.0.0.1:9"\nlisten = "127.0.0.1:45999"\n'
                    % ("00" * 16))
    host = RemoteHost(load_remote_config(str(path)))
    host.directory = cache
    return host


def _local_call_up(host, caller, callee):
    call = host.switch.new_call(caller, callee, 0)
    call.path = "local"
    call.b = host.switch.new_leg(host.main_link, bytes(16), 0, call)  # its callee leg exists: connected
    return call


def test_cached_directory_decides_like_the_main_host(tmp_path):
    cache = {"local_calls": True, "local_call_quota": 1,
             "extensions": {"101": {"barred": False}, "102": {"barred": False},
                            "103": {"barred": True}, "104": {"barred": False}}}
    host = _remote(tmp_path, cache)
    try:
        assert host._local_decision("101") is None
        assert host._local_decision("103") == wire.CAUSE_NOT_PERMITTED
        _local_call_up(host, "101", "102")
        assert host._local_decision("104") == wire.CAUSE_NETWORK_BUSY
        cache["local_call_quota"] = 0
        assert host._local_decision("104") is None
        cache["local_calls"] = False
        assert host._local_decision("104") == wire.CAUSE_NOT_PERMITTED
    finally:
        host.records.close()
