"""`upbx phone` in the foreground of a terminal (a real pty): Ctrl-C typed there stops the handset
the safe way. The terminal sends SIGINT to its foreground process group; the firmware runs in a
session of its own (tools/phone.py, supervise), so only `upbx phone` gets it and hands it on as 0x03
on the watchdog socket, raised at the firmware's next feed between two bytecodes. A SIGINT to the
MicroPython unix port itself raises KeyboardInterrupt wherever its C code is, in the garbage
collector too, leaving the heap locked ("memory allocation failed, heap is locked"): the handset
could not log out (docs/handset.md)."""
import json
import os
import pty
import select
import sys
import time

from tests.support import ROOT


class Terminal:
    """`upbx phone ...` as the session leader on a new pty, as a shell's foreground job is."""

    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:   # the child: the pty is its controlling terminal
            try:
                os.chdir(ROOT)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.text = ""

    def read(self, until, timeout=30):
        deadline = time.monotonic() + timeout
        while until not in self.text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r on the terminal:\n%s" % (until, self.text[-3000:]))
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    self.text += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:       # EIO: every process holding the pty's other side is gone
                    raise AssertionError("the terminal closed before %r:\n%s" % (until, self.text[-3000:]))
        return self.text

    def finish(self, timeout=30):
        """The output to the end and the exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    break
                self.text += data.decode("utf-8", "replace")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return self.text, status

    def firmware_pid(self):
        with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
            children = f.read().split()
        assert len(children) == 1, children
        return int(children[0])


def test_ctrl_c_typed_in_the_terminal_reaches_the_firmware_only_through_the_watchdog_socket(lab, tmp_path):
    """The handset's loop collects garbage nearly all the time (the fault "collect 400"), where a
    direct SIGINT left the heap locked in 8 stops of 8 (tests/test_handset.py); Ctrl-C typed on the
    terminal (the byte 0x03 through the pty's line discipline) logs out and writes the summary."""
    for i in range(2):
        summary = tmp_path / ("summary-%d.json" % i)
        term = Terminal([sys.executable, "-m", "upbx.tools.cli", "phone", "--extension", "102",
                         "--secret", lab.secrets["102"], "--host", lab.host_of("102"), "--bind", "127.0.0.1",
                         "--summary", str(summary), "--fault", "collect 400"])
        try:
            term.read("armed: collect 400")
            term.read("registered as 102")
            firmware = term.firmware_pid()
            # the terminal's foreground process group, which its Ctrl-C signals, holds `upbx phone` alone
            assert os.tcgetpgrp(term.fd) == os.getpgid(term.pid) != os.getpgid(firmware)
            time.sleep(0.2 * i)       # another moment of the loop
            os.write(term.fd, b"\x03")
            text, status = term.finish()
        except BaseException:
            os.kill(term.pid, 9)
            raise
        assert "stopped by Ctrl-C" in text and "heap is locked" not in text and "Traceback" not in text, text[-3000:]
        with open(summary) as f:
            assert json.load(f)["registered"] is True
        assert not os.path.exists("/proc/%d" % firmware) or open("/proc/%d/stat" % firmware).read().split()[2] == "Z"
