"""`upbx admin group ...`: ring, hunt and page groups in the main host's directory (host/groups.py).

    upbx admin --config main.toml group add 600 --members 101,102,201 --strategy ring-all [--ring-s N] [--overflow N]
    upbx admin --config main.toml group add 700 --strategy page --site north     # every phone of the site
    upbx admin --config main.toml group list | show 600 | del 600
"""
from upbx.host import groups
from upbx.host.directory import DirectoryError


class GroupAdminError(DirectoryError):
    """One line for stderr (host/admin.py prints it and exits 1)."""


def add_arguments(things, actions, leaf):
    """The `group` subcommands, made with host/admin.py's _actions and _leaf."""
    group = actions(things, "group", "ring groups, hunt groups, paging groups and pickup groups")
    for name, help_text in (("add", "add a group"), ("set", "change a group (the options given replace)")):
        p = leaf(group, name, help_text)
        p.add_argument("number")
        p.add_argument("--members", metavar="N,N,...", help="extensions, any site (hunt: in this order); "
                       "page: of its site (default: every phone of the site)")
        p.add_argument("--strategy", choices=groups.STRATEGIES, default=None if name == "set" else "ring-all")
        p.add_argument("--ring-s", type=int, metavar="N", help="seconds ringing: ring-all the whole group, hunt "
                       "each member (%d to %d, default %d)" % (groups.RING_S + (groups.DEFAULT_RING_S,)))
        p.add_argument("--overflow", metavar="N", help="where an unanswered call goes: an extension, a group, "
                       "voicemail's number ('none' removes it)")
        p.add_argument("--site", help="page: the site whose phones are paged")
    leaf(group, "list", "list the groups")
    leaf(group, "show", "one group").add_argument("number")
    leaf(group, "del", "remove a group").add_argument("number")


def _members(text):
    return [m.strip() for m in text.split(",") if m.strip()] if text else []


def group_add(d, args, done, replace=False):
    old = d.group(args.number) if replace else None
    if replace and old is None:
        raise GroupAdminError("unknown group %r" % args.number)
    group = dict(old or {"number": args.number})
    if args.strategy is not None:
        group["strategy"] = args.strategy
    if args.members is not None:
        group["members"] = _members(args.members)
    if args.ring_s is not None:
        group["ring_s"] = args.ring_s
    if args.overflow is not None:
        group["overflow"] = None if args.overflow == "none" else args.overflow
    if args.site is not None:
        group["site"] = args.site
    if group.get("strategy", "ring-all") not in groups.SITE_STRATEGIES:
        if args.site is not None:
            raise GroupAdminError("group %s: --site is for page and pickup groups" % args.number)
        group["site"] = None
    elif group.get("site") is None and group.get("members"):
        group["site"] = d.site_of_extension(group["members"][0])
    if group.get("strategy") == "page" and group.get("site") is None:
        raise GroupAdminError("group %s: a page group needs --site (or --members of one site)" % args.number)
    group = d.set_group(group, replace=replace)
    done(args, "group %s %s: %s" % (args.number, "changed" if replace else "added", _describe(group)), group)


def group_set(d, args, done):
    group_add(d, args, done, replace=True)


def group_list(d, args, table):
    rows = [dict(g, members=",".join(g["members"]) or "(every phone)") for g in d.groups()]
    if args.json:
        rows = d.groups()
    table(args, rows, [("number", "NUMBER"), ("strategy", "STRATEGY"), ("members", "MEMBERS"),
                       ("ring_s", "RING_S"), ("overflow", "OVERFLOW"), ("site", "SITE")])


def group_show(d, args, done):
    group = d.group(args.number)
    if group is None:
        raise GroupAdminError("unknown group %r" % args.number)
    done(args, "group %s: %s" % (args.number, _describe(group)), group)


def group_del(d, args, done):
    d.remove_group(args.number)
    done(args, "group %s removed" % args.number, {"number": args.number})


def _describe(g):
    if g["strategy"] == "pickup":
        return "pickup group of site %r: %s pick up each other's calls (*8)" % (g["site"], ",".join(g["members"]))
    if g["strategy"] == "page":
        return "page, every idle phone of site %r%s" % (
            g["site"], " among " + ",".join(g["members"]) if g["members"] else "")
    text = "%s %s, %d s%s" % (g["strategy"], ",".join(g["members"]), g["ring_s"],
                              " each" if g["strategy"] == "hunt" else "")
    return text + (", overflow to %s" % g["overflow"] if g["overflow"] else "")
