"""The relay's fast path (host/_fastpath.c, docs/relay.md) as an optional C extension.

Everything else is in pyproject.toml. The extension needs a C compiler and OpenSSL's headers
(Debian: build-essential, libssl-dev); where it cannot be built, `optional=True` lets the install
go on without it and the hosts run the pure-Python path (upbx.host.fastpath.AVAILABLE is False).
"""
import hashlib
import os

from setuptools import Extension, setup

SOURCE = "host/_fastpath.c"
# the source's hash built in: an editable install does not rebuild C on `git pull`, and
# upbx.host.fastpath refuses an extension built from another _fastpath.c than the one beside it
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), SOURCE), "rb") as f:
    SHA256 = hashlib.sha256(f.read()).hexdigest()

setup(ext_modules=[Extension("upbx.host._fastpath", [SOURCE], libraries=["crypto"], extra_compile_args=["-O2"],
                             define_macros=[("UPBX_SOURCE_SHA256", '"%s"' % SHA256)], optional=True)])
