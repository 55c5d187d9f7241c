"""Configuration files: defaults, validation errors naming file/key/problem, docs in sync."""
import pathlib
import subprocess
import sys

import pytest

from upbx.host.config import (SECTIONS, ConfigError, load_main_config, load_phone_config, load_remote_config,
                         markdown, parse_hostport, secret_from_hex)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET = "00112233445566778899aabbccddeeff"


def write(tmp_path, text, name="main.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(loader, path):
    with pytest.raises(ConfigError) as info:
        loader(path)
    return info.value


def test_empty_main_config_gives_documented_defaults(tmp_path):
    config = load_main_config(write(tmp_path, "[main]\n"))
    assert config.listen == ("0.0.0.0", 4569)
    assert config.database == str(tmp_path / "upbx-main.sqlite")
    assert config.control_socket == ""
    assert (config.log_level, config.log_format) == ("info", "text")
    assert (config.ring_timeout_s, config.registration_ttl_s) == (30, 120)
    assert config.keepalive_timeout_s == 75


def test_file_without_any_table_is_all_defaults(tmp_path):
    assert load_main_config(write(tmp_path, "")).listen == ("0.0.0.0", 4569)


def test_main_config_values_and_relative_paths(tmp_path):
    path = write(tmp_path, '[main]\nlisten = "198.18.0.1:5000"\ndatabase = "db/x.sqlite"\n'
                           'control_socket = "run/main.sock"\nlog_format = "json"\nkeepalive_timeout_s = 30\n')
    config = load_main_config(path)
    assert config.listen == ("198.18.0.1", 5000)
    assert config.database == str(tmp_path / "db" / "x.sqlite")
    assert config.control_socket == str(tmp_path / "run" / "main.sock")
    assert config.log_format == "json"
    assert config.keepalive_timeout_s == 30


def test_memory_database_is_kept_as_is(tmp_path):
    assert load_main_config(write(tmp_path, '[main]\ndatabase = ":memory:"\n')).database == ":memory:"


def test_wrong_listen_type_names_file_key_and_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[main]\nlisten = 4569\n")
    exc = error_of(load_main_config, "main.toml")
    assert str(exc) == "main.toml: key 'main.listen': expected \"HOST:PORT\", got 4569"
    assert (exc.path, exc.key) == ("main.toml", "main.listen")


@pytest.mark.parametrize("value", ['"0.0.0.0"', '"0.0.0.0:0"', '"0.0.0.0:65536"', '":4569"', '"a b:1"',
                                   '"1.2.3.4:x"', '"::1:4569"', '"999.1.1.1:5"'])
def test_bad_host_port_is_refused(tmp_path, value):
    exc = error_of(load_main_config, write(tmp_path, "[main]\nlisten = %s\n" % value))
    assert exc.key == "main.listen" and exc.problem == 'expected "HOST:PORT", got %s' % value


def test_host_names_are_accepted():
    assert parse_hostport("main.example.org:4569") == ("main.example.org", 4569)
    assert parse_hostport("localhost:1") == ("localhost", 1)


def test_unknown_key_suggests_the_closest(tmp_path):
    exc = error_of(load_main_config, write(tmp_path, '[main]\nlisen = "1.2.3.4:5"\n'))
    assert str(exc).endswith("key 'main.lisen': unknown key (did you mean 'main.listen'?)")


def test_unknown_key_far_from_any_has_no_suggestion(tmp_path):
    exc = error_of(load_main_config, write(tmp_path, "[main]\nzzzz = 1\n"))
    assert exc.problem == "unknown key"


def test_unknown_or_misspelt_section(tmp_path):
    assert error_of(load_main_config, write(tmp_path, "[mian]\n")).problem == "unknown section (did you mean 'main'?)"
    exc = error_of(load_main_config, write(tmp_path, "[remote]\nname = 'x'\n"))
    assert (exc.key, exc.problem) == ("remote", "unknown section (this file takes only [main] and [metrics] and [cluster])")
    exc = error_of(load_main_config, write(tmp_path, 'listen = "1.2.3.4:5"\n'))
    assert (exc.key, exc.problem) == ("listen", "outside any table; put it under [main]")


def test_numbers_must_be_positive_and_of_the_right_type(tmp_path):
    exc = error_of(load_main_config, write(tmp_path, "[main]\nring_timeout_s = 0\n"))
    assert exc.problem == "expected a positive number, got 0"
    exc = error_of(load_main_config, write(tmp_path, "[main]\nring_timeout_s = 1.5\n"))
    assert exc.problem == "expected an integer, got 1.5"
    exc = error_of(load_main_config, write(tmp_path, "[main]\nring_timeout_s = true\n"))
    assert exc.problem == "expected an integer, got true"
    exc = error_of(load_remote_config, write(tmp_path, remote_toml(punch_timeout_s='"2"'), "remote.toml"))
    assert exc.problem == 'expected a number, got "2"'


def test_choices(tmp_path):
    exc = error_of(load_main_config, write(tmp_path, '[main]\nlog_format = "xml"\n'))
    assert exc.problem == 'expected one of "text", "json", got "xml"'


def test_toml_syntax_error_and_missing_file(tmp_path):
    path = write(tmp_path, "[main\n")
    exc = error_of(load_main_config, path)
    assert exc.key is None and str(exc).startswith(path + ": not valid TOML: ")
    exc = error_of(load_main_config, str(tmp_path / "nope.toml"))
    assert str(exc) == "%s: cannot read: No such file or directory" % (tmp_path / "nope.toml")


def remote_toml(**extra):
    lines = ['[remote]', 'name = "north"', 'secret = "%s"' % SECRET, 'main = "198.18.0.1:4569"']
    lines += ["%s = %s" % kv for kv in extra.items()]
    return "\n".join(lines) + "\n"


def test_remote_config_defaults_fill_in_the_name(tmp_path):
    config = load_remote_config(write(tmp_path, remote_toml(), "remote.toml"))
    assert config.name == "north"
    assert config.secret == bytes.fromhex(SECRET)
    assert config.main == ("198.18.0.1", 4569)
    assert config.listen == ("0.0.0.0", 4570)
    assert config.keepalive_s == 10 and config.uplink_kbps == 0
    assert config.records_database == str(tmp_path / "upbx-remote-north.sqlite")
    assert config.directory_cache == str(tmp_path / "upbx-remote-north.cache.json")
    assert (config.login_backoff_initial_s, config.login_backoff_max_s) == (1.0, 30.0)
    assert config.registration_ttl_s == 120 and config.control_socket == ""
    assert config.punch_timeout_s == 2.0
    assert load_remote_config(write(tmp_path, remote_toml(punch_timeout_s=1), "remote.toml")).punch_timeout_s == 1.0
    assert "<secret>" in repr(config) and SECRET not in repr(config)


@pytest.mark.parametrize("missing", ["name", "secret", "main"])
def test_remote_required_keys(tmp_path, missing):
    text = "\n".join(line for line in remote_toml().splitlines() if not line.startswith(missing + " "))
    exc = error_of(load_remote_config, write(tmp_path, text, "remote.toml"))
    assert (exc.key, exc.problem) == ("remote." + missing, "required but missing")


def test_remote_keepalive_range(tmp_path):
    for value in (0, 26):
        exc = error_of(load_remote_config, write(tmp_path, remote_toml(keepalive_s=value), "remote.toml"))
        assert (exc.key, exc.problem) == ("remote.keepalive_s", "expected 1..25, got %d" % value)
    assert load_remote_config(write(tmp_path, remote_toml(keepalive_s=25), "remote.toml")).keepalive_s == 25


def test_remote_uplink_may_be_zero_not_negative(tmp_path):
    exc = error_of(load_remote_config, write(tmp_path, remote_toml(uplink_kbps=-1), "remote.toml"))
    assert exc.problem == "expected a number >= 0, got -1"


def test_remote_secret_must_be_hex_and_long_enough(tmp_path):
    text = remote_toml().replace(SECRET, "zz" * 16)
    exc = error_of(load_remote_config, write(tmp_path, text, "remote.toml"))
    assert exc.key == "remote.secret"
    assert exc.problem.startswith("expected a hex secret of at least 16 bytes (not hex)")
    text = remote_toml().replace(SECRET, SECRET[:30])
    exc = error_of(load_remote_config, write(tmp_path, text, "remote.toml"))
    assert "(15 bytes, at least 16 needed)" in exc.problem


def test_remote_backoff_initial_not_above_max(tmp_path):
    text = remote_toml(login_backoff_initial_s=40)
    exc = error_of(load_remote_config, write(tmp_path, text, "remote.toml"))
    assert exc.key == "remote.login_backoff_initial_s"


def test_remote_bad_name(tmp_path):
    text = remote_toml().replace('"north"', '"no rth/x"')
    assert error_of(load_remote_config, write(tmp_path, text, "remote.toml")).key == "remote.name"


def test_phone_config(tmp_path):
    path = write(tmp_path, '[phone]\nextension = "201"\nsecret = "%s"\nhost = "192.168.1.2:4570"\n'
                           'audio_in = "tone:440"\naudio_out = "out.wav"\n' % SECRET, "phone.toml")
    config = load_phone_config(path)
    assert config.extension == "201" and config.secret == bytes.fromhex(SECRET)
    assert config.host == ("192.168.1.2", 4570)
    assert config.audio_in == "tone:440" and config.audio_out == str(tmp_path / "out.wav")
    assert config.log_level == "info"


def test_phone_extension_must_be_digits(tmp_path):
    for value in ("201", 201, "2O1", ""):
        path = write(tmp_path, '[phone]\nextension = %s\nsecret = "%s"\nhost = "h:1"\n'
                               % ('"%s"' % value if isinstance(value, str) else value, SECRET), "phone.toml")
        if value == "201":
            assert load_phone_config(path).extension == "201"
        else:
            assert error_of(load_phone_config, path).key == "phone.extension"


def test_phone_tone_must_be_audible(tmp_path):
    path = write(tmp_path, '[phone]\nextension = "1"\nsecret = "%s"\nhost = "h:1"\naudio_in = "tone:x"\n'
                 % SECRET, "phone.toml")
    assert error_of(load_phone_config, path).problem == 'expected "tone:HZ" with 0 < HZ < 4000, got "tone:x"'


def test_secret_from_hex():
    assert secret_from_hex(SECRET) == bytes(range(0, 256, 17))
    with pytest.raises(ValueError):
        secret_from_hex("abc")
    with pytest.raises(ValueError):
        secret_from_hex("00" * 15)


def test_docs_config_md_is_generated_from_the_table():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert doc == markdown(), "regenerate: python -m host.config --markdown > docs/config.md"
    out = subprocess.run([sys.executable, "-m", "upbx.host.config", "--markdown"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out == doc
    for section, keys in SECTIONS.items():
        part = doc.split("## [%s]" % section)[1].split("\n## ")[0]
        for key in keys:
            assert "| `%s` |" % key.name in part
