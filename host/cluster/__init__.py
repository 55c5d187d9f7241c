"""The main host as a node of a cluster on PostgreSQL, Redis and etcd (docs/cluster.md).

postgres.py: the directory and call records on PostgreSQL (directory.py's SQL); replica.py: a
node's SQLite copy of the directory; coordination.py: etcd (identity, secrets, membership);
calls.py: one Redis key per call; node.py: what a node runs; status.py: `upbx cluster status`;
trunk.py: calls between two nodes' clients; direct.py: B2 between two nodes' sites.
Imported only when main.toml has a [cluster] table (psycopg, redis and aetcd are the cluster extra),
but for direct.py, which needs none of them and every main host holds.
"""
