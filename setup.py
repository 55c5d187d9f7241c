"""The relay's fast path (host/_fastpath.c, docs/relay.md) as an optional C extension.

Everything else is in pyproject.toml. The extension needs a C compiler and OpenSSL's headers
(Debian: build-essential, libssl-dev); where it cannot be built, `optional=True` lets the install
go on without it and the hosts run the pure-Python path (upbx.host.fastpath.AVAILABLE is False).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("upbx.host._fastpath", ["host/_fastpath.c"], libraries=["crypto"],
                             extra_compile_args=["-O2"], optional=True)])
