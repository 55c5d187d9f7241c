"""Work firmware/events.py put off for want of room for its code (`put_off`): done in an idle second of the
housekeeping (App._housekeeping), from a module of its own, so that firmware/events.py, loaded for every
event (a download's included, with the least room), carries none of it (docs/handset.md, "Work an event
can put off")."""
from firmware.hal import rarely


def run_deferred(app, now):
    """What put_off kept, oldest first (App._housekeeping, while idle with no events held); a MemoryError
    leaves the rest for a later second."""
    waiting = app.deferred
    while waiting:
        work = waiting[0]
        if work == 0:
            rarely("firmware.ota").registered(app, now)
        else:
            rarely("firmware.sysinfo").received(app, work.version, work.data)
        waiting.pop(0)
        app.log("I", "work put off for want of heap: done")
    app.deferred = None
