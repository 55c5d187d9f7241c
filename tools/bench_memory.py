"""`upbx bench memory`: a handset's heap on the 32-bit unix port, frozen image and .mpy files.

Per case: the heap the firmware's modules take once imported, the live heap of a registered idle
handset and in a call (B1 relayed, B3 phone to phone: two media legs), each the peak of the
once-a-second collections the firmware reports in its summary, and the smallest `-X heapsize`
(in steps of 4 KB, down from the target) at which both calls still complete with audio.
"""
import os
import shutil
import subprocess
import tempfile

from upbx.tools.images import ImageError, unix32_image
from upbx.tools.lab import LoopbackExchange, place_call
from upbx.tools.phone import compiled_tree, binary_march, flash_layout

# (case, frozen image?, upbx phone flags, the heap the issue sets as the target)
CASES = (("frozen", True, (), 64), ("mpy", False, ("--mpy",), 100))
STEP_K = 4
IMPORT_SCRIPT = "import gc\nimport firmware.start\nfrom firmware.app import App\ngc.collect()\nprint(gc.mem_alloc())\n"


def import_heap(binary, frozen):
    """Bytes the firmware's modules hold after `from firmware.app import App` (as firmware/start.py does)."""
    flash = tempfile.mkdtemp(prefix="upbx-mem-")
    try:
        tree = None if frozen else compiled_tree(binary_march(binary))
        flash_layout(flash, frozen, tree)
        with open(os.path.join(flash, "probe.py"), "w") as f:
            f.write(IMPORT_SCRIPT)
        # run as a module, as upbx phone runs main.py: module paths are then the device's (tools/phone.py)
        out = subprocess.run([binary, "-X", "heapsize=2M", "-m", "probe"], cwd=flash, capture_output=True, text=True,
                             env=dict(os.environ, MICROPYPATH=":.frozen"), timeout=60)
        return int(out.stdout.split()[-1])
    finally:
        shutil.rmtree(flash, ignore_errors=True)


def _peak(lab, tag):
    heaps = [lab.summary(tag + "-" + role)["heap"] for role in ("caller", "callee")]
    return max(h["peak_live"] for h in heaps), heaps[0]["total"]


def calls_at(lab, args, heap_k, trial):
    """B1 and B3 calls with every handset at heap_k KB: {behaviour: (completed, peak live)}. A call
    completes when it ends with normal clearing, the callee's audio matches what the caller sent,
    and the caller received at least 95 % of the callee's frames (both directions)."""
    flags = list(args) + ["--heapsize", "%dK" % heap_k]
    out = {}
    for behaviour, caller, callee in (("B1", "101", "301"), ("B3", "101", "102")):
        tag = "%s%d" % (behaviour, trial)
        try:
            row = place_call(lab, caller, callee, tag, 2.0, caller_args=flags, callee_args=flags)
            name = "%s-%s-%s" % (tag, caller, callee)
            back = lab.summary(name + "-callee")["frames_sent"], lab.summary(name + "-caller")["frames_received"]
            ok = bool(row["audio_match"]) and row["cause"] == "normal clearing" and back[1] >= 0.95 * back[0] > 0
            out[behaviour] = (ok, _peak(lab, name)[0] if ok else None)
        except (OSError, ValueError, KeyError, TimeoutError, subprocess.TimeoutExpired):
            out[behaviour] = (False, None)
    return out


def smallest_heap(lab, base, target_k, completes, trial, limit_k=64):
    """The smallest heap (KB, in STEP_K steps) at which both calls complete: down from the target
    when they complete there, else up from it (at most limit_k above; None past that)."""
    heap_k = target_k
    if completes:
        while heap_k - STEP_K > 0:
            trial += 1
            if not all(ok for ok, _ in calls_at(lab, base, heap_k - STEP_K, trial).values()):
                return heap_k
            heap_k -= STEP_K
        return heap_k
    while heap_k < target_k + limit_k:
        heap_k += STEP_K
        trial += 1
        if all(ok for ok, _ in calls_at(lab, base, heap_k, trial).values()):
            return heap_k
    return None


def bench_memory(quick=False):
    """Import, idle and in-call heap per case, and the smallest heap both calls complete with."""
    results = {}
    try:
        binaries = {frozen: str(unix32_image(frozen=frozen, log=lambda *a: None)) for frozen in (True, False)}
    except ImageError as exc:
        return {"skipped": "the 32-bit unix port cannot be built here: %s" % exc}
    with LoopbackExchange() as lab:
        lab.provision()
        lab.start()
        trial = 0
        for case, frozen, args, target_k in CASES:
            binary = binaries[frozen]
            base = ["--micropython", binary] + list(args)
            idle = lab.phone("302", *base, "--heapsize", "%dK" % target_k, "--exit-after", "4", tag="idle-" + case)
            idle.wait(30)
            try:
                heap = lab.summary("idle-" + case)["heap"]
            except (OSError, ValueError):
                heap = {"peak_live": None, "total": None}   # it did not even start at this heap
            trial += 1
            at_target = calls_at(lab, base, target_k, trial)
            entry = {"binary": os.path.relpath(binary), "target_heap_k": target_k,
                     "import_bytes": import_heap(binary, frozen), "idle_peak_live": heap["peak_live"],
                     "heap_total": heap["total"],
                     "call_peak_live": {b: peak for b, (ok, peak) in at_target.items()},
                     "completes_at_target": all(ok for ok, _ in at_target.values())}
            entry["smallest_heap_k"] = None if quick else smallest_heap(lab, base, target_k,
                                                                        entry["completes_at_target"], trial)
            trial += 100
            if not entry["completes_at_target"] and entry["smallest_heap_k"]:
                # the in-call figures where the calls do complete
                done = calls_at(lab, base, entry["smallest_heap_k"], trial)
                entry["call_peak_live"] = {b: peak for b, (ok, peak) in done.items()}
            results[case] = entry
    return results


def table_memory(r):
    if "skipped" in r:
        return "memory: skipped: " + r["skipped"]
    lines = ["memory: live heap of a handset on the 32-bit unix port (bytes; peak of the once-a-second "
             "collections)"]
    head = ["case", "import", "idle", "call B1", "call B3", "completes at", "smallest heap"]
    rows = [head]
    for case, e in r.items():
        rows.append([case, str(e["import_bytes"]), str(e["idle_peak_live"] or "-"),
                     str(e["call_peak_live"]["B1"] or "-"), str(e["call_peak_live"]["B3"] or "-"),
                     "%dK: %s" % (e["target_heap_k"], "yes" if e["completes_at_target"] else "NO"),
                     "%sK" % e["smallest_heap_k"] if e["smallest_heap_k"] else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
