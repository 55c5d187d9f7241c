"""`upbx netlab`: the Internet, NAT routers, sites and phones in network namespaces.

Topology (see docs/netlab.md): one "Internet" segment 198.18.0.0/16 (a bridge in the
namespace PREFIXinet) holding the main host `main` (198.18.0.1) and a spare Internet
host `peer` (198.18.0.2); per site X in a..z (index k = 1..26) a NAT router
`site-X/router` with WAN address 198.18.k.1 and LAN 10.k.0.0/24, a remote host
`site-X/remote` (10.k.0.2, only at sites with a remote host) and phones
`site-X/phone-N` (10.k.0.(10+N)).

The lab's state lives in the kernel (namespaces named PREFIX..., nftables in the routers), so
`down` and `status` also work after a crash; beside it only who built it: a lab built from a
program (a test) has an owner file OWNERS_DIR/PREFIX naming the process, and `up` first removes
the labs whose owner has died (a killed test run), never one whose owner still runs.
"""
import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

DEFAULT_PREFIX = "upbx-"
NAT_TYPES = ("cone", "symmetric")
DEFAULT_SITES = ("a", "b", "c")
DEFAULT_REMOTE_SITES = ("a", "b")
DEFAULT_PHONES = 2
MAIN_ADDRESS = "198.18.0.1"
PEER_ADDRESS = "198.18.0.2"
INTERNET_PREFIXLEN = 16
NETNS_DIR = "/run/netns"
NFT_TABLE = "upbx_nat"
OWNERS_DIR = "/run/upbx-netlab"   # tmpfs, as /run/netns: both go at a reboot

_CLONE_NEWNET = 0x40000000


class LabError(Exception):
    """A lab operation failed; the message names the command and what it said."""


class NotRoot(LabError):
    """The lab needs root (network namespaces, nftables)."""


# -- names and addresses (pure) ------------------------------------------------------

def site_index(site):
    """'a' -> 1 ... 'z' -> 26."""
    if len(site) != 1 or not "a" <= site <= "z":
        raise LabError("site names are single letters a..z, not %r" % site)
    return ord(site) - ord("a") + 1


def default_wan_address(site):
    return "198.18.%d.1" % site_index(site)


def lan_network(site):
    return "10.%d.0.0/24" % site_index(site)


def _lan_address(site, host):
    return "10.%d.0.%d" % (site_index(site), host)


def node_address(node):
    """The fixed address of a node: Internet address for main/peer, LAN address otherwise."""
    if node == "main":
        return MAIN_ADDRESS
    if node == "peer":
        return PEER_ADDRESS
    site, role, number = _parse_site_node(node)
    if role == "router":
        return _lan_address(site, 1)
    if role == "remote":
        return _lan_address(site, 2)
    return _lan_address(site, 10 + number)


_NODE_RE = re.compile(r"^site-([a-z])/(router|remote|phone-([0-9]+))$")


def _parse_site_node(node):
    match = _NODE_RE.match(node)
    if not match:
        raise LabError("unknown node %r (main, peer, site-X/router, site-X/remote, site-X/phone-N)" % node)
    site, role, number = match.group(1), match.group(2), match.group(3)
    if number is not None:
        if not 1 <= int(number) <= 200:
            raise LabError("phone number out of range in %r" % node)
        return site, "phone", int(number)
    return site, role, None


def _ns_suffix(node):
    """'main' -> 'main', 'site-a/phone-1' -> 'a-phone1'."""
    if node in ("main", "peer", "inet"):
        return node
    site, role, number = _parse_site_node(node)
    return "%s-%s" % (site, "phone%d" % number if role == "phone" else role)


def _node_from_suffix(suffix):
    if suffix in ("main", "peer", "inet"):
        return suffix
    match = re.match(r"^([a-z])-(router|remote|phone([0-9]+))$", suffix)
    if not match:
        return None
    if match.group(3):
        return "site-%s/phone-%d" % (match.group(1), int(match.group(3)))
    return "site-%s/%s" % (match.group(1), match.group(2))


def _node_order(node):
    """main, peer, then per site: router, remote, phones by number."""
    if not node.startswith("site-"):
        return ("", node != "main", 0)
    site, role, number = _parse_site_node(node)
    return (site, ("router", "remote", "phone").index(role) + 2, number or 0)


def _nft_ruleset(nat):
    """The router's rules: masquerade on the WAN side, and a home router's inbound filter.

    Cone: plain masquerade keeps the inside source port when it is free, so one inside
    socket shows the same public port to every destination (endpoint-independent mapping).
    Symmetric: `fully-random` draws a fresh public port for every new flow.
    Inbound: only packets of flows conntrack already knows (address-and-port-dependent
    filtering, what UDP hole punching opens). Unsolicited packets are dropped before
    conntrack confirms them, so they leave no entry that could steal a later mapping.
    """
    masquerade = "masquerade" if nat == "cone" else "masquerade fully-random"
    return """table ip %(t)s
delete table ip %(t)s
table ip %(t)s {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" %(m)s comment "nat=%(nat)s"
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" icmp type echo-request accept
    iifname "wan" drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }
}
""" % {"t": NFT_TABLE, "m": masquerade, "nat": nat}


# -- running commands -----------------------------------------------------------------

def _run(argv, input=None, check=True):
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError("%s: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()))
    return proc


def _ip_json(ns, *args):
    out = _run(["ip", "-j", "-n", ns] + list(args), check=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


_libc = None


def _setns(fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError("setns: %s" % os.strerror(err))


@contextlib.contextmanager
def inside_netns(ns):
    """Run the body with the calling thread in namespace `ns` (sockets made here stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise LabError("no namespace %s (is the lab up?)" % ns)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _write_sysctls(ns, values):
    with inside_netns(ns):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            if os.path.exists(path):
                with open(path, "w") as f:
                    f.write(value)


def _flush_conntrack_here():
    """Delete every IPv4 conntrack entry of the current namespace (ctnetlink flush)."""
    nfnl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    try:
        msg_type = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
        flags = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
        body = struct.pack("!BBH", socket.AF_INET, 0, 0)  # nfgenmsg
        nfnl.send(struct.pack("=LHHLL", 16 + len(body), msg_type, flags, 1, 0) + body)
        reply = nfnl.recv(4096)
        _, reply_type, _, _, _ = struct.unpack_from("=LHHLL", reply)
        if reply_type == 2:  # NLMSG_ERROR; error 0 is the ACK
            error = struct.unpack_from("=i", reply, 16)[0]
            if error not in (0, -2):  # -ENOENT: the table was empty
                raise LabError("conntrack flush: %s" % os.strerror(-error))
    finally:
        nfnl.close()


def _require_root():
    if os.geteuid() != 0:
        raise NotRoot("the network lab needs root (network namespaces, nftables): run it with sudo")
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            raise LabError("%s not found: install iproute2 and nftables" % tool)


# -- owners: labs a dead process left --------------------------------------------------

def _process_start(pid):
    """When process pid started (clock ticks after boot), or None when there is no such process:
    with the pid it names a process, which a pid alone does not once the pid is used again."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (OSError, ValueError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])    # field 22, starttime (fields from 3 after the name)


def _read_owner(prefix):
    """{"pid", "start"} of the process that owns the lab prefix, or None (no owner file, or unreadable)."""
    try:
        with open(os.path.join(OWNERS_DIR, prefix)) as f:
            owner = json.load(f)
        return {"pid": int(owner["pid"]), "start": int(owner["start"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owner_alive(owner):
    return owner is not None and _process_start(owner["pid"]) == owner["start"]


def sweep_dead_labs():
    """Remove every lab whose owner process has ended (its namespaces, with what runs in them, and
    its owner file): what a killed test run left. Labs whose owner runs, and labs without an owner
    (`upbx netlab up`, or built before owners were kept), are not touched. Returns the prefixes removed."""
    try:
        prefixes = sorted(os.listdir(OWNERS_DIR))
    except FileNotFoundError:
        return []
    removed = []
    for prefix in prefixes:
        if prefix.endswith(".tmp") or not re.match(r"^[A-Za-z0-9_.-]{1,40}$", prefix):
            continue
        owner = _read_owner(prefix)
        if owner is None or owner_alive(owner):
            continue
        Lab(prefix).down()
        removed.append(prefix)
    return removed


# -- the lab --------------------------------------------------------------------------

class Lab:
    """A lab identified by its namespace prefix; every method reads the live kernel state."""

    def __init__(self, prefix=None):
        prefix = prefix or os.environ.get("UPBX_NETLAB_PREFIX") or DEFAULT_PREFIX
        if not re.match(r"^[A-Za-z0-9_.-]{1,40}$", prefix):
            raise LabError("bad netlab prefix %r" % prefix)
        self.prefix = prefix
        self._own = re.compile(r"^%s(inet|main|peer|[a-z]-(?:router|remote|phone[0-9]+))$" % re.escape(prefix))

    def __repr__(self):
        return "Lab(%r)" % self.prefix

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    # names

    def netns(self, node):
        """Namespace of a node: 'site-a/phone-1' -> PREFIXa-phone1; also takes 'a-phone1' or the name itself."""
        if self._own.match(node):
            return node
        if _node_from_suffix(node):
            return self.prefix + node
        return self.prefix + _ns_suffix(node)

    def address(self, node):
        """The node's own address: on the Internet for main and peer, on its LAN otherwise."""
        return node_address(self._canonical(node))

    def _canonical(self, node):
        ns = self.netns(node)
        return _node_from_suffix(ns[len(self.prefix):])

    def namespaces(self):
        """This lab's namespaces that exist now (leftovers of a crash included)."""
        try:
            names = os.listdir(NETNS_DIR)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if self._own.match(n))

    def nodes(self):
        """Node names that exist now ('main', 'site-a/phone-1', ...), without the inet bridge."""
        found = [_node_from_suffix(ns[len(self.prefix):]) for ns in self.namespaces()]
        return sorted((n for n in found if n != "inet"), key=_node_order)

    def sites(self):
        return sorted(n[5] for n in self.nodes() if n.endswith("/router"))

    def exists(self):
        return self.netns("inet") in self.namespaces()

    # building

    def up(self, nat="cone", sites=DEFAULT_SITES, phones=DEFAULT_PHONES, remote_sites=DEFAULT_REMOTE_SITES,
           owned=True):
        """Build the lab, or bring an existing one to this shape without disturbing what is right.

        nat: "cone" / "symmetric", or a dict site -> type (missing sites: cone).
        sites: site letters; remote_sites: those of them with a remote host; phones: per site.
        owned: this process owns the lab (a test's): once it has ended, the next `up` of any lab on
        the machine removes it (sweep_dead_labs). `upbx netlab up` builds a lab nobody owns: it
        stays until `upbx netlab down`.
        """
        _require_root()
        sweep_dead_labs()
        if owned:
            self._write_owner()
        sites = tuple(sites)
        for site in sites:
            site_index(site)
        nat_of = {s: (nat.get(s, "cone") if isinstance(nat, dict) else nat) for s in sites}
        for site, kind in nat_of.items():
            if kind not in NAT_TYPES:
                raise LabError("NAT type of site %s must be cone or symmetric, not %r" % (site, kind))
        wanted = {"inet", "main", "peer"}
        inet = self.netns("inet")
        self._ensure_ns(inet, {"net.bridge.bridge-nf-call-iptables": "0"})
        self._ensure_bridge(inet, "br0", None)
        for node in ("main", "peer"):
            self._ensure_host(node, inet, node, "%s/%d" % (node_address(node), INTERNET_PREFIXLEN), None)
        for site in sites:
            router = "site-%s/router" % site
            wanted.add(router)
            self._ensure_router(site, nat_of[site])
            hosts = (["site-%s/remote" % site] if site in remote_sites else [])
            hosts += ["site-%s/phone-%d" % (site, n) for n in range(1, phones + 1)]
            for node in hosts:
                wanted.add(node)
                port = _ns_suffix(node).split("-", 1)[1]
                self._ensure_host(node, self.netns(router), port, node_address(node) + "/24", _lan_address(site, 1))
        for ns in self.namespaces():
            if _node_from_suffix(ns[len(self.prefix):]) not in wanted:
                self._delete_ns(ns)
        return self

    def _write_owner(self):
        """The owner file, written before the lab's first namespace (a crash after it leaves nothing
        unowned), atomically (a sweep never reads half of one)."""
        os.makedirs(OWNERS_DIR, mode=0o755, exist_ok=True)
        path = os.path.join(OWNERS_DIR, self.prefix)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "start": _process_start(os.getpid())}, f)
        os.replace(tmp, path)

    def owner(self):
        """{"pid", "start"} of the process that owns this lab, or None (nobody owns it)."""
        return _read_owner(self.prefix)

    def _ensure_ns(self, ns, sysctls):
        if not os.path.exists(os.path.join(NETNS_DIR, ns)):
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _write_sysctls(ns, sysctls)

    def _ensure_bridge(self, ns, name, cidr):
        if not _ip_json(ns, "link", "show", "dev", name):
            _run(["ip", "-n", ns, "link", "add", name, "type", "bridge"])
        _run(["ip", "-n", ns, "link", "set", "dev", name, "up"])
        if cidr:
            self._ensure_address(ns, name, cidr)

    def _ensure_veth(self, ns, ifname, bridge_ns, port):
        """A veth from `ns`:ifname to a port of bridge br0 in `bridge_ns` (pairs die together)."""
        if not _ip_json(bridge_ns, "link", "show", "dev", port):
            _run(["ip", "-n", ns, "link", "del", "dev", ifname], check=False)
            _run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", bridge_ns])
        _run(["ip", "-n", bridge_ns, "link", "set", "dev", port, "master", "br0", "up"])
        _run(["ip", "-n", ns, "link", "set", "dev", ifname, "up"])

    def _ensure_address(self, ns, dev, cidr):
        have = {"%s/%s" % (a["local"], a["prefixlen"])
                for link in _ip_json(ns, "-4", "addr", "show", "dev", dev) for a in link.get("addr_info", [])}
        if have != {cidr}:
            _run(["ip", "-n", ns, "addr", "flush", "dev", dev])
            _run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])

    def _ensure_host(self, node, bridge_ns, port, cidr, gateway):
        ns = self.netns(node)
        self._ensure_ns(ns, {})
        self._ensure_veth(ns, "eth0", bridge_ns, port)
        self._ensure_address(ns, "eth0", cidr)
        if gateway:
            _run(["ip", "-n", ns, "route", "replace", "default", "via", gateway])

    def _ensure_router(self, site, nat):
        ns = self.netns("site-%s/router" % site)
        self._ensure_ns(ns, {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "0"})
        self._ensure_veth(ns, "wan", self.netns("inet"), "wan-" + site)
        if not self.wan_address(site):  # a live lab keeps a WAN address moved by change_wan_address
            self._ensure_address(ns, "wan", "%s/%d" % (default_wan_address(site), INTERNET_PREFIXLEN))
        self._ensure_bridge(ns, "br0", _lan_address(site, 1) + "/24")
        if self.nat_type(site) != nat:
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=_nft_ruleset(nat))

    def _delete_ns(self, ns):
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while pids and time.monotonic() < deadline:
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            time.sleep(0.02)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "del", ns], check=False)

    def down(self):
        """Remove every namespace of this lab (with its links, addresses and nftables), and
        stop what still runs in them. Safe to call when nothing is there."""
        _require_root()
        for ns in self.namespaces():
            self._delete_ns(ns)
        with contextlib.suppress(FileNotFoundError):    # last: a crash half way leaves it owned
            os.unlink(os.path.join(OWNERS_DIR, self.prefix))

    # reading and changing the live lab

    def nat_type(self, site):
        """'cone' / 'symmetric' as configured in the router now, or None."""
        ns = self.netns("site-%s/router" % site)
        if not os.path.exists(os.path.join(NETNS_DIR, ns)):
            return None
        out = _run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", NFT_TABLE], check=False).stdout
        match = re.search(r'comment "nat=(\w+)"', out)
        return match.group(1) if match else None

    def wan_address(self, site):
        """The router's public address now."""
        for link in _ip_json(self.netns("site-%s/router" % site), "-4", "addr", "show", "dev", "wan"):
            for addr in link.get("addr_info", []):
                return addr["local"]
        return None

    def change_wan_address(self, site, new_address):
        """Give the site's router a new public address now, as an ISP does (behaviour B7).

        The old address goes, the new one comes, and the router's conntrack table is
        flushed, so the next packet of every existing flow leaves with the new address.
        """
        _require_root()
        address = new_address.split("/")[0]
        if not address.startswith("198.18."):
            raise LabError("WAN addresses live in 198.18.0.0/16, not %s" % new_address)
        ns = self.netns("site-%s/router" % site)
        _run(["ip", "-n", ns, "addr", "flush", "dev", "wan"])
        _run(["ip", "-n", ns, "addr", "add", "%s/%d" % (address, INTERNET_PREFIXLEN), "dev", "wan"])
        self.flush_conntrack("site-%s/router" % site)

    def flush_conntrack(self, node):
        """Forget every NAT mapping and tracked flow in a node's namespace."""
        with inside_netns(self.netns(node)):
            _flush_conntrack_here()

    def count_leaving(self, site, table, min_lengths):
        """Count the packets that leave site's router for the Internet (its WAN), one counter per
        {name: least IP length}: an nftables table of that name in the router (gone with the lab)."""
        rules = "".join('  oifname "wan" meta length >= %d counter comment "%s"\n' % (least, name)
                        for name, least in sorted(min_lengths.items()))
        self.exec("site-%s/router" % site, ["nft", "-f", "-"], check=True, text=True, input=(
            "table inet %s {\n chain wan_out {\n  type filter hook postrouting priority 0;\n%s }\n}\n"
            % (table, rules)))

    def cut(self, site, address, table="upbx_cut"):
        """The path between site's router and one Internet address is lost, both ways (what the router forwards
        to or from it is dropped; everything else passes) until heal(site, table). An nftables table of that
        name in the router, gone with the lab."""
        self.exec("site-%s/router" % site, ["nft", "-f", "-"], check=True, text=True, input=(
            "table inet %s {\n chain cut {\n  type filter hook forward priority -10;\n  ip daddr %s drop\n"
            "  ip saddr %s drop\n }\n}\n" % (table, address, address)))

    def heal(self, site, table="upbx_cut"):
        """cut's path back."""
        self.exec("site-%s/router" % site, ["nft", "delete", "table", "inet", table], check=True)

    def counted(self, site, table):
        """{name: packets} of count_leaving's counters so far."""
        out = self.exec("site-%s/router" % site, ["nft", "-j", "list", "table", "inet", table],
                        capture_output=True, text=True, check=True).stdout
        counts = {}
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule", {})
            for expr in rule.get("expr", ()):
                if "counter" in expr:
                    counts[rule.get("comment")] = expr["counter"]["packets"]
        return counts

    def inside(self, node):
        """Context manager: the calling thread works in the node's namespace meanwhile."""
        return inside_netns(self.netns(node))

    def socket(self, node, family=socket.AF_INET, type=socket.SOCK_DGRAM, bind=None):
        """A socket that lives in the node's namespace (usable from this process)."""
        with self.inside(node):
            sock = socket.socket(family, type)
            if bind is not None:
                sock.bind(bind)
        return sock

    def _argv(self, node, argv):
        ns = self.netns(node)
        if not os.path.exists(os.path.join(NETNS_DIR, ns)):
            raise LabError("no node %s in lab %s (is the lab up?)" % (node, self.prefix))
        return ["ip", "netns", "exec", ns] + list(argv)

    def exec(self, node, argv, **kwargs):
        """subprocess.run(argv) inside the node; kwargs go to subprocess.run."""
        return subprocess.run(self._argv(node, argv), **kwargs)

    def popen(self, node, argv, **kwargs):
        """subprocess.Popen(argv) inside the node; kwargs go to subprocess.Popen."""
        return subprocess.Popen(self._argv(node, argv), **kwargs)

    def status(self):
        """The live lab as a dict: nodes with namespace and addresses, sites with NAT and WAN."""
        nodes = []
        for node in self.nodes():
            ns = self.netns(node)
            addrs = ["%s/%s" % (a["local"], a["prefixlen"])
                     for link in _ip_json(ns, "-4", "addr", "show") if link.get("ifname") != "lo"
                     for a in link.get("addr_info", [])]
            nodes.append({"node": node, "netns": ns, "addresses": addrs})
        sites = [{"site": s, "nat": self.nat_type(s), "wan": self.wan_address(s), "lan": lan_network(s)}
                 for s in self.sites()]
        return {"prefix": self.prefix, "up": self.exists(), "sites": sites, "nodes": nodes, "owner": self.owner()}


# -- command line ---------------------------------------------------------------------

def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def with_prefix(p):
        p.add_argument("--prefix", default=None,
                       help="namespace prefix (default $UPBX_NETLAB_PREFIX or %s)" % DEFAULT_PREFIX)
        return p

    up = with_prefix(sub.add_parser("up", help="build the lab (idempotent)"))
    up.add_argument("--nat", choices=NAT_TYPES, default="cone", help="NAT type of every site (default cone)")
    for site in DEFAULT_SITES:
        up.add_argument("--nat-" + site, choices=NAT_TYPES, default=None, help="NAT type of site " + site)
    up.add_argument("--sites", default=",".join(DEFAULT_SITES), help="site letters (default a,b,c)")
    up.add_argument("--remotes", default=",".join(DEFAULT_REMOTE_SITES),
                    help="sites with a remote host (default a,b)")
    up.add_argument("--phones", type=int, default=DEFAULT_PHONES, help="phones per site (default 2)")
    with_prefix(sub.add_parser("down", help="remove the lab, leftovers of a crash included"))
    status = with_prefix(sub.add_parser("status", help="show nodes, addresses and NAT types"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    ex = with_prefix(sub.add_parser("exec", help="run a command in a node: exec NODE -- CMD..."))
    ex.add_argument("node", help="main, peer, site-a/router, site-a/remote, site-a/phone-1, ...")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")


def _split(text):
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _print_status(st):
    if not st["nodes"]:
        print("netlab %s: down" % st["prefix"])
        return
    print("netlab %s: %s" % (st["prefix"], "up" if st["up"] else "partial (run up or down)"))
    by_site = {}
    for n in st["nodes"]:
        by_site.setdefault(n["node"][5] if n["node"].startswith("site-") else "", []).append(n)
    for n in by_site.pop("", []):
        print("  %-16s %-28s %s" % (n["node"], " ".join(n["addresses"]), n["netns"]))
    for s in st["sites"]:
        print("  site %s: NAT %s, WAN %s, LAN %s" % (s["site"], s["nat"], s["wan"], s["lan"]))
        for n in by_site.get(s["site"], []):
            print("    %-16s %-26s %s" % (n["node"], " ".join(n["addresses"]), n["netns"]))


def run(args):
    try:
        _require_root()
        lab = Lab(args.prefix)
        if args.action == "up":
            sites = _split(args.sites)
            nat = {s: (getattr(args, "nat_" + s, None) or args.nat) for s in sites}
            start = time.monotonic()
            lab.up(nat=nat, sites=sites, phones=args.phones, remote_sites=_split(args.remotes), owned=False)
            _print_status(lab.status())
            print("built in %.1f s" % (time.monotonic() - start))
        elif args.action == "down":
            gone = lab.namespaces()
            lab.down()
            print("netlab %s: removed %d namespaces" % (lab.prefix, len(gone)))
        elif args.action == "status":
            st = lab.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                _print_status(st)
        elif args.action == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                print("upbx netlab exec: give a command after --", file=sys.stderr)
                return 2
            return lab.exec(args.node, cmd).returncode
    except NotRoot as exc:
        print("upbx netlab: %s" % exc, file=sys.stderr)
        return 2
    except LabError as exc:
        print("upbx netlab: %s" % exc, file=sys.stderr)
        return 1
    return 0
