"""`upbx cluster status --config MAIN.toml [--json]`: the cluster's nodes, their load and their sites.

Read from the engines, not from a node: the live nodes and what each says of its load
(remote hosts, phones, calls, datagrams forwarded to and from other nodes, the sites whose home
session is at it, `sites`, those it only keeps a standby session of, `standby_sites`, and the sites at home there
whose first node is another, which move there once idle, `away_sites`) and the address clients reach it at, from
etcd, and the
calls each relays from their Redis keys. A node that was killed drops out of the list
once its lease expires (`lease_s`).
"""
import asyncio
import json
import sys

from upbx.host.config import ConfigError, load_main_config
from upbx.tools.status import table


def add_arguments(parser):
    parser.add_argument("action", choices=("status",), help="status: nodes, their load and their sites")
    parser.add_argument("--config", required=True, metavar="MAIN.toml", help="a node's configuration ([cluster])")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


async def gather(config):
    """{"nodes": [...], "calls": live calls in Redis, "ended": ended calls' keys not yet expired}."""
    from upbx.host.cluster import coordination
    from upbx.host.cluster.engines import redis_client
    from upbx.host.cluster.calls import KEY
    client = await coordination.connect(config.cluster_etcd)
    try:
        members = await coordination.members(client)
    finally:
        await client.close()
    by_node, live, ended = {}, 0, 0
    r = redis_client(config.cluster_redis)
    try:
        async for key in r.scan_iter(match=KEY % "*", count=1000):
            value = await r.get(key)
            if value is None:
                continue   # expired meanwhile
            call = json.loads(value)
            if call["ended"]:
                ended += 1
                continue
            if call.get("spliced_into"):
                continue   # a half spliced into another node's call (host/cluster/calls.py): that call is counted
            live += 1
            by_node[call["node"]] = by_node.get(call["node"], 0) + 1
    finally:
        await r.aclose()
    nodes = [dict(info, name=name, calls_in_redis=by_node.get(name, 0)) for name, info in sorted(members.items())]
    return {"nodes": nodes, "calls": live, "ended": ended}


def run(args):
    try:
        config = load_main_config(args.config)
    except ConfigError as exc:
        print("upbx cluster: %s" % exc, file=sys.stderr)
        return 2
    if not config.cluster_postgres:
        print("upbx cluster: %s: no [cluster] table: this main host is on its own" % args.config, file=sys.stderr)
        return 2
    try:
        state = asyncio.run(gather(config))
    except Exception as exc:   # an engine unreachable: aetcd's, redis-py's and OSError's errors alike
        print("upbx cluster: %s" % (exc if str(exc) else exc.__class__.__name__), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state, sort_keys=True))
        return 0
    rows = [(n["name"], n["id"], n.get("address", n["listen"]), n["remote_hosts"], n["phones"], n["calls"],
             "%s/%s" % (n.get("forwarded_out", "-"), n.get("forwarded_in", "-")), ", ".join(n["sites"]),
             ", ".join(n.get("standby_sites", ())), ", ".join(n.get("away_sites", ())))
            for n in state["nodes"]]
    print("\n".join(table("nodes", ("node", "id", "address", "remote hosts", "phones", "calls", "forwarded out/in",
                                     "sites", "standby for", "moving away"), rows)))
    print("calls in Redis: %d live, %d ended (kept until they expire)" % (state["calls"], state["ended"]))
    return 0
