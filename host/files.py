"""Files that hold secrets: created 0600 in 0700 directories, and loose ones reported.

main.sqlite holds every device secret, a remote host's directory cache its
site's phone secrets, a configuration file with `secret` a device's secret. A
umask of 022 would leave all of them readable by every local user, so these
files are created with mode 0600 (SQLite gives its -wal and -shm files the mode
of the database), missing parent directories with 0700, and a file of ours found
readable by others is tightened with a warning.
"""
import os
import stat

LOOSE = stat.S_IRWXG | stat.S_IRWXO   # any permission for the group or others


def private_file(path):
    """Make sure path exists with mode 0600 (creating 0700 parents); a warning text, or None.

    The warning says when an existing file was readable by others and has been
    tightened. ":memory:" and "" are left alone.
    """
    path = str(path)
    if path in ("", ":memory:"):
        return None
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & LOOSE:
            return None
        os.chmod(path, mode & ~LOOSE)
        return "%s was readable by others (mode %04o) and holds secrets: now %04o" % (path, mode, mode & ~LOOSE)
    os.close(fd)
    return None


def private_database(path):
    """private_file for an SQLite database and its -wal and -shm files; warnings, a list."""
    warnings = [private_file(path)]
    for suffix in ("-wal", "-shm"):
        if path not in ("", ":memory:") and os.path.exists(str(path) + suffix):
            warnings.append(private_file(str(path) + suffix))
    return [w for w in warnings if w]


def write_private(path, data):
    """Replace path with data (bytes) atomically; the file is 0600 from its first byte."""
    path = str(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)   # a .tmp left by an older version may have been 0644
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
    finally:
        if fd is not None:
            os.close(fd)
    os.replace(tmp, path)


def loose_secret_file(path):
    """A warning when a file holding a secret can be read by others, else None (it is not changed)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        return "%s holds a secret and is readable or writable by others (mode %04o): chmod 600 %s" % (
            path, mode, path)
    return None
