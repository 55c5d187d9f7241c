"""What a handset's events need of its heap (firmware/events.py) on the 32-bit build, the ESP32's word size.

The real App, unix HAL and firmware/events.py in one MicroPython process (as tests/test_handset_receive.py
runs the receive path): the heap is filled (firmware/hal/faults.py's `_fill`, what `!fault fill` does) so
that events.py's own small functions still run but firmware/ota.py's code cannot be loaded. A registration
(LoginUp: its firmware report needs firmware/ota.py) then puts that report off instead of holding the
events behind it: the call's ring-back and connected events are handled at once. Before, the whole list
was held: a 100K `.mpy` handset at a cluster's node, logging in again after its node died and calling at
once, sent no audio for as long as the call lasted (its connected event never ran: tests/test_cluster_standby.py).
Once the heap is let go, the put-off report runs (firmware/putoff.py, from the once-a-second housekeeping
when idle).
"""
from tests.test_handset_receive import PRELUDE, run_app_script
from upbx.tools.phone import binary_march, compiled_tree

FULL = r'''
from firmware.hal.faults import _fill
def on_full_heap(action, done, failed="raised"):
    """action() with the heap filled to 600 bytes free (room for app.py's and events.py's own code, none for a
    module they load), then let go again: `done`, or `failed` on a MemoryError out of it. Its locals need no heap."""
    gc.collect()
    ballast = _fill(600)
    try:
        action()
        outcome = done
    except MemoryError:
        outcome = failed
    ballast = None
    gc.collect()
    return outcome
'''

def _on_100k_mpy(path, script, unix32_plain):
    """The script on the 32-bit build with `.mpy` files, as a handset holds them (code loads, not compiles), at 100K."""
    return run_app_script(path, script, unix32_plain, tree=compiled_tree(binary_march(unix32_plain)), heap="100K")


SCRIPT = PRELUDE + FULL + r'''
import firmware.events as events
from common.login import LoginUp
from common.phone import Connected, Ringback
import firmware.hal
loaded = []
real_rarely = firmware.hal.rarely
def watched(name):
    loaded.append(name)
    return real_rarely(name)
events.rarely = watched
app.current = {"from": "101", "to": "301", "dialed_ms": 0, "setup_ms": None, "path": None, "cause": None,
               "frames_sent": 0, "frames_received": 0}
queue = [LoginUp({}), Ringback(), Connected("relay")]
outcome = on_full_heap(lambda: events.handle(app, queue, 1000), "handled", "held")   # no room for firmware/ota.py
print("RESULT outcome", outcome)
print("RESULT left", len(queue))
print("RESULT connected_at", app.connected_at)
print("RESULT deferred", app.deferred)
print("RESULT loaded", loaded)
loaded.clear()
putoff = firmware.hal.rarely("firmware.putoff")   # what the housekeeping does when idle
putoff.rarely = watched
putoff.run_deferred(app, 2000)
print("RESULT after", app.deferred, loaded)
'''


def test_a_registration_without_room_for_its_firmware_report_puts_it_off_and_holds_no_call_event(tmp_path,
                                                                                                  unix32_plain):
    found, out = _on_100k_mpy(tmp_path / "events.py", SCRIPT, unix32_plain)
    assert found["outcome"] == "handled", out   # no MemoryError out of handle(): nothing held
    assert found["left"] == "0", out            # the registration, the ring-back and the connected event
    assert found["connected_at"] == "1000", out   # the connected event ran: the microphone started, the call's timers
    assert found["deferred"] == "[0]", out        # 0: the firmware report (firmware/events.py put_off)
    assert found["loaded"] == "['firmware.ota']", out   # tried, found no room
    assert found["after"] == "None ['firmware.ota']", out   # done once the heap had room
    assert "I phone work put off for want of heap: done" in out, out


KEY_SCRIPT = PRELUDE + FULL + r'''
import firmware.app
loaded = []
real_rarely = firmware.app.rarely
def watched(name):
    loaded.append(name)
    return real_rarely(name)
firmware.app.rarely = watched
app.digits = "C"          # a transfer being keyed: every key goes to firmware/lines.py
outcome = on_full_heap(lambda: app.key("5", 1000), "lost")   # no room for firmware/lines.py
print("RESULT outcome", outcome)
print("RESULT keys_lost", app.summary["keys_lost"])
print("RESULT digits", app.digits)
app.key("7", 2000)         # the heap has room again: the next key works
print("RESULT after", app.digits, loaded)
'''


def test_a_key_that_finds_no_room_for_its_module_is_lost_and_counted_not_a_reset(tmp_path, unix32_plain):
    """With a transfer being keyed (or two lines in use) every key needs firmware/lines.py; on a full
    heap its import raised MemoryError out of the loop, which resets the handset and drops the call."""
    found, out = _on_100k_mpy(tmp_path / "key.py", KEY_SCRIPT, unix32_plain)
    assert found["outcome"] == "lost", out      # no MemoryError out of App.key
    assert found["keys_lost"] == "1", out
    assert found["digits"] == "C", out          # the lost key changed nothing
    assert found["after"] == "C7 ['firmware.lines', 'firmware.lines']", out


FINISH_SCRIPT = PRELUDE + r'''
from firmware.hal.faults import _fill
import firmware.app
loaded = []
real_rarely = firmware.app.rarely
def watched(name):
    loaded.append(name)
    return real_rarely(name)
firmware.app.rarely = watched
app.script["summary"] = sys.argv[1] + "/../finish-summary.json"
app.running = True        # as App.run leaves it until `!quit` or the script's end
app.started = 0
outcome = ballast = None   # bound now: storing a new global may need the heap
gc.collect()
ballast = _fill(600)       # room for app.py's own code, none for firmware/commands.py's
try:
    app.finish()
    outcome = "finished"
except MemoryError:
    outcome = "raised"
print("RESULT outcome", outcome)
print("RESULT loaded", loaded)
print("RESULT concealer", app.pipeline.concealer)
ballast = None
gc.collect()
import json
with open(app.script["summary"]) as f:
    summary = json.load(f)
print("RESULT summary", summary["extension"], summary["frames_sent"], sorted(summary["jitter"])[:2])
'''


def test_a_handset_that_stops_on_a_full_heap_still_writes_its_summary(tmp_path, unix32_plain):
    """`!quit` (or the script's end) on a heap too full for firmware/commands.py's code, which ends the run
    (log out, close the call's record, write the summary): before, the MemoryError loading it went to the
    crash handler, which reset the handset with no summary written (a clean-clone CI run's test_survival,
    "full-101 wrote no summary"). The run being over, the concealer's history (~3.5 KB on this build, more
    than that code) goes first, then the code loads."""
    found, out = _on_100k_mpy(tmp_path / "finish.py", FINISH_SCRIPT, unix32_plain)
    assert found["outcome"] == "finished", out
    assert found["loaded"] == "['firmware.commands', 'firmware.commands']", out   # no room, then room
    assert found["concealer"] == "None", out
    assert found["summary"] == "101 0 ['bad_size', 'concealed']", out   # the jitter's counters too


FINISH_IN_CALL_SCRIPT = PRELUDE + r'''
from common.phone import Ended
app.script["summary"] = sys.argv[1] + "/../finish-summary.json"
app.running = True
app.started = 0
app.pipeline.concealer = None            # what App.finish let go on a heap with no room for firmware/commands.py
app.phone._events.append(Ended(0, 0))    # a call's end among the events (firmware/events.py ended resets the pipeline)
try:
    app.finish()
    print("RESULT outcome finished")
except Exception as exc:
    print("RESULT outcome", repr(exc))
import json
with open(app.script["summary"]) as f:
    print("RESULT summary", json.load(f)["extension"])
'''


def test_a_finish_that_let_the_concealer_go_with_a_call_ending_still_writes_its_summary(tmp_path, unix32_plain):
    """App.finish on a heap with no room for firmware/commands.py lets the concealer go (above); firmware/commands.py
    then handled the events, and a call's end among them reset the pipeline: `AttributeError: 'NoneType' object has
    no attribute 'reset'` (a clean-clone CI run's crash handler, `E phone while finishing`), and no summary. Now those
    events are left (the call's record says "in progress"), and the summary is written."""
    found, out = _on_100k_mpy(tmp_path / "finish.py", FINISH_IN_CALL_SCRIPT, unix32_plain)
    assert found["outcome"] == "finished", out
    assert found["summary"] == "101", out
    assert "call ended" not in out, out


LOGIN_SCRIPT = PRELUDE + r'''
import firmware.events as events
from common.login import LoginUp
app.phone.no_standby = True   # as common/cluster.py leaves a phone at a node with no room for a standby
queue = [LoginUp({})]
events.handle(app, queue, 1000)
print("RESULT after", app.phone.cluster_out, len(queue))
app.flush(1000)
print("RESULT standby", "firmware.standby" in sys.modules)
'''


def test_a_registration_without_room_for_a_standby_says_so_without_the_standby_code(tmp_path, unix32_plain):
    """The registration of a phone at a node with no room for a standby says so (firmware/ota.py, loaded for the
    registration anyway, or put off with it), and App.flush has nothing to load firmware/standby.py for: before,
    every such login loaded that module for the one line, on the heap's fullest moment (a grace period's login, its
    calls named at once), and common/cluster.py, loaded at every login event, held the line's text."""
    found, out = _on_100k_mpy(tmp_path / "login.py", LOGIN_SCRIPT, unix32_plain)
    assert found["after"] == "None 0", out
    assert found["standby"] == "False", out
    assert out.count("W phone no standby session: too little free heap") == 1, out
