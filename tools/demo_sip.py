"""`upbx demo sip [--json]`: baresip as a SIP phone of site A, behind its NAT in the network lab,
calling a upbx handset at site C and called by it, calling a handset of its own site (B3), and
transferring a call by REFER, with audio checked both ways (docs/sip.md).

The exchange runs in the lab as tools/netlab_exchange.py places it: the main host on "the
Internet", site A's remote host on its LAN (10.1.0.2) with handset 101 (site-a/phone-1), site C's
handset 301 behind its router. Extension 105 of site A is a SIP phone (`upbx admin ext add 105
--site a --sip`); baresip in site-a/phone-2 registers to the remote host's SIP port with that
password and plays 1000 Hz; 301 plays 600 Hz, 101 1400 Hz. The calls: 105 -> 301, 301 -> 105,
105 -> 101, and 105 -> 301 transferred by baresip's `/transfer` to 101 (then 301 and 101 talk).
A call's audio matches when the far end's tone is what each side heard in at least 80 % of the
100 ms windows of the call's middle (Goertzel on the handset's received frames and on baresip's
recording). Needs root (namespaces), baresip and the SIP side of the hosts; what is
missing is named in the call's "error" and the demo exits 1.
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from upbx.common.g711 import ulaw_decode
from upbx.tools.baresip import Baresip, BaresipError, binary, write_tone
from upbx.tools.lab import goertzel_power, read_g711_record

SIP_NUMBER = "105"
HANDSET = "301"
LOCAL = "101"         # a handset at site A, beside the SIP phone
SIP_HZ, HANDSET_HZ, LOCAL_HZ = 1000, 600, 1400
WINDOW = 800          # samples: 100 ms


def heard_share(pcm, hz, other_hz):
    """Of the 100 ms windows of pcm past the first and before the last 300 ms, the share in which hz
    dominates (1e9 power and 10x other_hz's); 0.0 for less than one window."""
    windows = [pcm[i:i + 2 * WINDOW] for i in range(2 * 2400, len(pcm) - 2 * 2400 - 2 * WINDOW + 1, 2 * WINDOW)]
    if not windows:
        return 0.0
    hits = 0
    for w in windows:
        p = goertzel_power(w, WINDOW, hz)
        hits += p > 1e9 and p > 10 * goertzel_power(w, WINDOW, other_hz)
    return hits / len(windows)


def _sip_password(ex):
    """The SIP password of extension 105, or raise RuntimeError saying what the hosts lack."""
    try:
        out = ex.admin("ext", "add", SIP_NUMBER, "--site", "a", "--name", "baresip", "--sip")
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["(no message)"]
        raise RuntimeError("`upbx admin ext add %s --site a --sip` failed: %s (the hosts' SIP side, sip-core's "
                           "part of issue 13, is not in this build)" % (SIP_NUMBER, last[0]))
    return out.splitlines()[-1]


def _row(caller, callee, path=None, setup_ms=None):
    return {"from": caller, "to": callee, "path": path, "setup_ms": setup_ms, "audio_match": False,
            "sip_heard": 0.0, "handset_heard": 0.0, "frames_received": 0, "transfer_to": None, "error": None}


def _last_path(ex, caller=None, callee=None):
    """The path of the newest call record (of caller and callee, either way round, when given)."""
    try:
        records = json.loads(ex.admin("calls", "--json", "--limit", "10"))
    except (subprocess.CalledProcessError, ValueError):
        return None
    if caller is not None:
        records = [r for r in records if {r.get("caller"), r.get("callee")} == {caller, callee}]
    return records[0].get("path") if records else None


def _finish(row, phone, record, handset_hz=HANDSET_HZ):
    frames = read_g711_record(record)
    row["frames_received"] = len(frames)
    handset_pcm = b"".join(ulaw_decode(p) for _ts, p in frames)
    row["handset_heard"] = round(heard_share(handset_pcm, SIP_HZ, handset_hz), 2)
    row["sip_heard"] = round(heard_share(phone.heard(), handset_hz, SIP_HZ), 2)
    row["audio_match"] = row["handset_heard"] >= 0.8 and row["sip_heard"] >= 0.8


def _pcm(record, last_s=None):
    """What a handset received (its --record-g711), decoded; with last_s, only its last seconds."""
    frames = read_g711_record(record)
    if last_s is not None:
        frames = frames[-int(last_s * 50):]
    return b"".join(ulaw_decode(p) for _ts, p in frames)


def _handset_answers(ex, number, hz, tag, exit_after):
    """Handset `number` answers the next call playing hz and records what it hears: (process, record)."""
    record = ex.path(tag + ".rx.g711")
    process = ex.phone(number, "--answer", "--send", "tone:%d" % hz, "--record-g711", record,
                       "--exit-after-call", "--exit-after", str(exit_after), tag=tag)
    return process, record


def _dial(ex, phone, row, number):
    """baresip dials number (at site A's remote host) until it is answered; the row's setup_ms.
    Returns the index of baresip's events before the call (to wait for this call's events)."""
    since = len(phone.events)
    started = time.monotonic()
    phone.dial("sip:%s@%s" % (number, ex.remote_ip("a")))
    phone.wait_event("CALL_ESTABLISHED", timeout=15, since=since)
    row["setup_ms"] = int((time.monotonic() - started) * 1000)
    return since


def _wait_path(ex, caller, callee):
    """The path of the newest record of caller and callee; a site's record reaches the main host
    just after the call, so it is waited for (5 s)."""
    for _ in range(50):
        path = _last_path(ex, caller, callee)
        if path is not None:
            return path
        time.sleep(0.1)
    return None


def baresip_calls(ex, phone, number, hz, seconds):
    """105 (baresip) calls handset `number`, which answers playing hz; they talk for `seconds`,
    baresip hangs up; the row with the path of the call's record and what each side heard."""
    row = _row(SIP_NUMBER, number)
    handset, record = _handset_answers(ex, number, hz, "sip-to-%s" % number, seconds + 20)
    ex.wait_registered(number)
    since = _dial(ex, phone, row, number)
    time.sleep(seconds)
    phone.hangup()
    phone.wait_event("CALL_CLOSED", timeout=10, since=since)
    handset.wait(15)
    row["path"] = _wait_path(ex, SIP_NUMBER, number)
    _finish(row, phone, record, hz)
    return row


def local_call(ex, phone, seconds):
    """105 (baresip) calls 101, a handset of its own site: B3, switched at site A's remote host."""
    try:
        return baresip_calls(ex, phone, LOCAL, LOCAL_HZ, seconds)
    except (BaresipError, subprocess.TimeoutExpired, OSError, TimeoutError) as exc:
        return dict(_row(SIP_NUMBER, LOCAL), error=str(exc))


def transfer_call(ex, phone, seconds):
    """105 (baresip) calls 301 and transfers it by REFER (`/transfer`) to 101: 301 and 101 talk.
    The row's sip_heard: baresip heard 301 before; handset_heard: 101 heard 301; audio_match also
    needs 301 to hear 101 in its last seconds."""
    row = _row(SIP_NUMBER, HANDSET)
    row["transfer_to"] = LOCAL
    h301, rec301 = _handset_answers(ex, HANDSET, HANDSET_HZ, "transfer-301", 2 * seconds + 30)
    h101, rec101 = _handset_answers(ex, LOCAL, LOCAL_HZ, "transfer-101", 2 * seconds + 30)
    try:
        ex.wait_registered(HANDSET)
        ex.wait_registered(LOCAL)
        since = _dial(ex, phone, row, HANDSET)
        time.sleep(seconds)
        phone.command("transfer", "sip:%s@%s" % (LOCAL, ex.remote_ip("a")))
        phone.wait_event("CALL_CLOSED", timeout=15, since=since, fail_on=())
        row["sip_heard"] = round(heard_share(phone.heard(), HANDSET_HZ, SIP_HZ), 2)
        time.sleep(seconds + 1)
        h101.stdin.write(b"!hangup\n")
        h101.stdin.flush()
        h101.wait(15)
        h301.wait(15)
        row["path"] = _wait_path(ex, HANDSET, LOCAL)
        frames = read_g711_record(rec101)
        row["frames_received"] = len(frames)
        row["handset_heard"] = round(heard_share(_pcm(rec101), HANDSET_HZ, LOCAL_HZ), 2)
        stays_heard = heard_share(_pcm(rec301, seconds), LOCAL_HZ, HANDSET_HZ) if seconds >= 1 else 0.0
        row["audio_match"] = row["sip_heard"] >= 0.8 and row["handset_heard"] >= 0.8 and stays_heard >= 0.8
    except (BaresipError, subprocess.TimeoutExpired, OSError, TimeoutError) as exc:
        row["error"] = str(exc)
    return row


def sip_calls(ex, phone, seconds):
    """The two calls, SIP -> handset and handset -> SIP; one row each."""
    try:   # 105 (baresip) calls 301
        rows = [baresip_calls(ex, phone, HANDSET, HANDSET_HZ, seconds)]
    except (BaresipError, subprocess.TimeoutExpired, OSError, TimeoutError) as exc:
        rows = [dict(_row(SIP_NUMBER, HANDSET), error="%s (waits on the hosts' SIP call layer, sip-core's B2BUA, "
                                                      "if it is not built yet)" % exc)]
    # 301 calls 105
    row = _row(HANDSET, SIP_NUMBER)
    rows.append(row)
    record = ex.path("handset-to-sip.rx.g711")
    try:
        since = len(phone.events)
        started = time.monotonic()
        handset = ex.phone(HANDSET, "--send", "tone:%d" % HANDSET_HZ, "--record-g711", record, "--call", SIP_NUMBER,
                           "--call-after", "0.8", "--duration", str(seconds), "--exit-after-call", "--exit-after",
                           str(seconds + 20), tag="handset-to-sip")
        phone.wait_event("CALL_INCOMING", timeout=15, since=since)
        phone.accept()
        phone.wait_event("CALL_ESTABLISHED", timeout=10, since=since)
        row["setup_ms"] = int((time.monotonic() - started) * 1000) - 800
        phone.wait_event("CALL_CLOSED", timeout=seconds + 15, since=since)
        handset.wait(15)
        row["path"] = _wait_path(ex, HANDSET, SIP_NUMBER)
        _finish(row, phone, record)
    except (BaresipError, subprocess.TimeoutExpired, OSError, TimeoutError) as exc:
        cause = _handset_cause(ex, "handset-to-sip")
        row["error"] = "%s%s (waits on the hosts' SIP call layer, sip-core's B2BUA, if it is not built yet)" % (
            exc, "; the handset's call ended with cause %s" % cause if cause is not None else "")
    return rows


def _handset_cause(ex, tag):
    """The cause the handset's call ended with (its summary), once it has exited; else None."""
    for _ in range(50):
        try:
            calls = ex.summary(tag)["calls"]
            return calls[0].get("cause") if calls else None
        except (OSError, ValueError):
            time.sleep(0.2)
    return None


def run_demo(seconds=3.0, workdir=None):
    """Lab, exchange, baresip, the two calls: ({"calls": [...]} , workdir). Raises RuntimeError when
    it cannot start (no root, no baresip, no SIP at the hosts)."""
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces and nftables for the lab)")
    if binary() is None:
        raise RuntimeError("baresip is not installed (Debian: apt-get install baresip-core)")
    from upbx.tools.netlab import Lab
    from upbx.tools.netlab_exchange import NetlabExchange
    workdir = workdir or tempfile.mkdtemp(prefix="upbx-demo-sip-")
    lab = Lab("upbxs%s-" % secrets.token_hex(3))
    ex = None
    phone = None
    try:
        lab.up(sites=("a", "c"), remote_sites=("a",), phones=2)
        ex = NetlabExchange(lab, workdir)
        ex.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": [LOCAL], "c": [HANDSET]})
        password = _sip_password(ex)
        ex.start()
        mic = write_tone(os.path.join(workdir, "baresip-mic.wav"), SIP_HZ, 2 * seconds + 40)
        phone = Baresip(os.path.join(workdir, "baresip"), SIP_NUMBER, ex.remote_ip("a"), password=password,
                        lab=lab, node="site-a/phone-2", source=mic, display="baresip")
        phone.start()
        try:   # the remote host's registrar says so (baresip's REGISTER_OK may come before its control socket is up)
            ex.wait_for(lambda: ex.status("site-a")["sip"]["registered"].get(SIP_NUMBER) == 1, "105 registered",
                        timeout=20)
        except (AssertionError, RuntimeError, TimeoutError) as exc:
            raise RuntimeError("baresip did not register at site A's remote host (its SIP registrar, "
                               "sip-core's part of issue 13): %s" % exc)
        rows = sip_calls(ex, phone, seconds)
        if all(r["error"] is None for r in rows):     # the SIP side works: B3 and a transfer too
            rows += [local_call(ex, phone, seconds), transfer_call(ex, phone, seconds)]
        return {"calls": rows}, workdir
    finally:
        if phone is not None:
            phone.stop()
        if ex is not None:
            ex.close()
        lab.down()


def run(args):
    print("starting the lab: main host, site A's remote host, baresip and handset 101 at site A, handset 301 at "
          "site C ...", file=sys.stderr)
    workdir = tempfile.mkdtemp(prefix="upbx-demo-sip-")
    try:
        result, _ = run_demo(args.seconds, workdir)
    except RuntimeError as exc:
        print("upbx demo sip: %s" % exc, file=sys.stderr)
        if args.json:
            print(json.dumps({"calls": [], "error": str(exc)}))
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = result["calls"]
    if args.json:
        print(json.dumps(result))
    else:
        header = "%-5s %-9s %-8s %8s %6s %-5s  %s" % ("from", "to", "path", "setup ms", "recv", "audio",
                                                    "heard by SIP phone / handset (share of 100 ms windows)")
        print(header)
        print("-" * len(header))
        for r in rows:
            print("%-5s %-9s %-8s %8s %6d %-5s  %.2f / %.2f%s" % (
                r["from"], r["to"] + (">" + r["transfer_to"] if r["transfer_to"] else ""), r["path"] or "-",
                r["setup_ms"] if r["setup_ms"] is not None else "-",
                r["frames_received"], "ok" if r["audio_match"] else "BAD", r["sip_heard"], r["handset_heard"],
                ("   " + r["error"]) if r["error"] else ""))
        if args.keep:
            print("\nlogs and recordings: %s" % workdir)
    return 0 if rows and all(r["audio_match"] for r in rows) else 1
