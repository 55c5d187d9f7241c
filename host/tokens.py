"""API tokens of the main host's JSON API and web admin page (docs/operations.md, "API").

A token is 32 random bytes shown once, when it is made (`upbx admin token add NAME --role
admin|viewer`); the directory keeps only its SHA-256. A token has 256 bits of entropy, so a
fast hash is enough (a slow password hash protects guessable secrets; nothing guesses this one),
and a request costs one indexed lookup. Tokens live in the directory's database, in their own
table, so a token made or removed while the main host runs counts from the next request.
"""
import hashlib
import secrets
import time

ROLES = ("admin", "viewer")   # admin: read and write; viewer: read only
PREFIX = "upbx_"              # tells a upbx token apart in a config file or a leaked log

_SCHEMA = """CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
)"""


class TokenError(ValueError):
    """A token change refused; str() is one line for the operator."""


def _table(directory):
    directory.db.execute(_SCHEMA)


def _hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def add(directory, name, role):
    """Make a token for NAME with ROLE; returns the token (only its hash is stored)."""
    from upbx.host.directory import DirectoryError, check_name
    try:
        check_name("token", name)
    except DirectoryError as exc:
        raise TokenError(str(exc)) from None
    if role not in ROLES:
        raise TokenError("bad role %r: use %s" % (role, " or ".join(ROLES)))
    token = PREFIX + secrets.token_urlsafe(32)
    with directory._transaction():
        _table(directory)
        if directory._one("SELECT 1 FROM api_tokens WHERE name = ?", (name,)):
            raise TokenError("token %r already exists" % name)
        directory.db.execute("INSERT INTO api_tokens VALUES (?, ?, ?, ?)",
                             (name, role, _hash(token), int(time.time() * 1000)))
    return token


def remove(directory, name):
    with directory._transaction():
        _table(directory)
        if not directory.db.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount:
            raise TokenError("unknown token %r" % name)


def tokens(directory):
    """[{"name", "role", "created" (UTC)}] by name; never the hashes."""
    _table(directory)
    rows = directory.db.execute("SELECT name, role, created_ms FROM api_tokens ORDER BY name")
    return [{"name": n, "role": r, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c / 1000))}
            for n, r, c in rows]


def check(directory, token):
    """(name, role) of a valid token, else None."""
    if not token or not token.startswith(PREFIX) or len(token) > 100:
        return None
    _table(directory)
    row = directory._one("SELECT name, role FROM api_tokens WHERE hash = ?", (_hash(token),))
    return (row[0], row[1]) if row else None


# `upbx admin token ...` (host/admin.py wires these in)

def add_arguments(things, actions, leaf):
    token = actions(things, "token", "tokens of the JSON API and web admin page")
    p = leaf(token, "add", "make a token and print it (shown once)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES, help="admin: read and write; viewer: read only")
    leaf(token, "list", "list tokens (names and roles, never the tokens)")
    leaf(token, "remove", "remove a token: requests with it are refused at once").add_argument("name")


def token_add(d, args, secret_out):
    token = add(d, args.name, args.role)
    secret_out(args, "token %r (%s) added" % (args.name, args.role),
               {"name": args.name, "role": args.role, "token": token}, "token")


def token_list(d, args, table):
    table(args, tokens(d), [("name", "NAME"), ("role", "ROLE"), ("created", "CREATED (UTC)")])


def token_remove(d, args, done):
    remove(d, args.name)
    done(args, "token %r removed" % args.name, {"name": args.name})
