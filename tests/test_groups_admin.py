"""`upbx admin group add|set|list|show|del` against a real SQLite file (host/groups_admin.py), and
what reaches a remote host's cache."""
import json

import pytest

from upbx.host.directory import Directory
from upbx.tools.cli import main as upbx


@pytest.fixture
def admin(tmp_path, capsys):
    database = str(tmp_path / "main.sqlite")
    with Directory(database) as d:
        for site in ("a", "b"):
            d.add_site(site)
        for number, site in (("101", "a"), ("102", "a"), ("201", "b")):
            d.add_extension(number, site)

    def run(*argv):
        code = upbx(["admin", "--database", database] + list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.database = database
    return run


def test_group_add_list_show_del(admin):
    code, out, _ = admin("group", "add", "600", "--members", "101,102,201", "--strategy", "ring-all")
    assert code == 0 and out == "group 600 added: ring-all 101,102,201, 15 s\n"
    assert admin("group", "add", "610", "--members", "201,101", "--strategy", "hunt", "--ring-s", "10",
                 "--overflow", "600")[0] == 0
    assert admin("group", "add", "700", "--strategy", "page", "--site", "a")[0] == 0
    code, out, _ = admin("group", "list")
    assert out.splitlines() == [
        "NUMBER  STRATEGY  MEMBERS        RING_S  OVERFLOW  SITE",
        "600     ring-all  101,102,201    15      -         -",
        "610     hunt      201,101        10      600       -",
        "700     page      (every phone)  15      -         a"]
    code, out, _ = admin("group", "show", "610", "--json")
    assert json.loads(out) == {"number": "610", "strategy": "hunt", "members": ["201", "101"], "ring_s": 10,
                               "overflow": "600", "site": None}
    assert admin("group", "set", "610", "--overflow", "none", "--ring-s", "20")[0] == 0
    assert json.loads(admin("group", "show", "610", "--json")[1])["overflow"] is None
    assert admin("group", "del", "600")[0] == 0
    assert [g["number"] for g in json.loads(admin("group", "list", "--json")[1])] == ["610", "700"]
    with Directory(admin.database) as d:       # the remote hosts' copies: the groups with a member there
        assert sorted(d.site_groups("a")) == ["610", "700"] and sorted(d.site_groups("b")) == ["610"]


@pytest.mark.parametrize("argv, error", [
    (("group", "add", "601", "--members", "101,999"), "member 999 is not an extension"),
    (("group", "add", "601", "--members", "101,101"), "member 101 is listed twice"),
    (("group", "add", "601", "--members", "101", "--ring-s", "1"), "bad ring time 1: 3 to 300 seconds"),
    (("group", "add", "601"), "a ring-all group needs members"),
    (("group", "add", "601", "--strategy", "page"), "group 601: a page group needs --site (or --members of one site)"),
    (("group", "add", "601", "--strategy", "page", "--members", "101,201"),
     "member 201 is on site 'b': a page group's members are of site 'a'"),
    (("group", "add", "101", "--members", "102"), "101 is an extension's number"),
    (("group", "add", "601", "--members", "101", "--overflow", "555"), "overflow 555 is neither an extension nor a group"),
    (("group", "add", "601", "--members", "101", "--overflow", "601"), "group 601 cannot overflow to itself"),
    (("group", "add", "601", "--members", "101", "--site", "a"), "group 601: --site is for page and pickup groups"),
    (("group", "add", "6x", "--members", "101"), "bad group number '6x': 1 to 15 digits"),
    (("group", "add", "601", "--strategy", "pickup", "--members", "101,201"),
     "member 201 is on site 'b': a pickup group's members are of site 'a'"),
    (("group", "add", "601", "--strategy", "pickup", "--members", "101", "--overflow", "102"),
     "a pickup group rings nobody: no ring time, no overflow"),
    (("group", "show", "699"), "unknown group '699'"),
    (("group", "del", "699"), "unknown group '699'"),
    (("group", "set", "699", "--ring-s", "5"), "unknown group '699'"),
])
def test_a_bad_group_is_refused_naming_what_is_wrong_and_changes_nothing(admin, argv, error):
    code, out, err = admin(*argv)
    assert code == 1 and err == "upbx admin: %s\n" % error and out == ""
    assert json.loads(admin("group", "list", "--json")[1]) == []


def test_a_pickup_group_takes_its_site_from_its_members(admin):
    code, out, _ = admin("group", "add", "680", "--strategy", "pickup", "--members", "101,102")
    assert code == 0 and out == "group 680 added: pickup group of site 'a': 101,102 pick up each other's calls (*8)\n"
    with Directory(admin.database) as d:
        assert d.group("680")["site"] == "a" and "680" in d.site_groups("a") and "680" not in d.site_groups("b")
        assert d.pickup_scope("101") == {"101", "102"} and d.pickup_scope("201") == {"201"}


def test_a_group_number_is_not_an_extension_and_an_overflow_target_stays(admin):
    admin("group", "add", "600", "--members", "101")
    admin("group", "add", "610", "--members", "102", "--overflow", "600")
    assert admin("ext", "add", "600", "--site", "a")[2] == "upbx admin: 600 is a group's number\n"
    assert admin("group", "del", "600")[2] == (
        "upbx admin: group 600 is the overflow of group 610; change that first\n")
