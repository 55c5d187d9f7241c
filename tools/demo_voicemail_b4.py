"""`upbx demo features`' voicemail_b4 scenario (docs/features.md, Voicemail, B4): a site's copy of
its mailboxes at its remote host, used while the main host is down. Real firmware phones and real
daemons; the evidence is what the phones' speakers played (Goertzel on their recordings) and the
main host's mailbox once it is back (`upbx admin voicemail list`).
"""
import json
import math
import struct
import wave

from upbx.host.voicemail import VoicemailStore
from upbx.tools.demo_features import WAIT_S, ConsolePhone
from upbx.tools.demo_voicemail import leave, sound
from upbx.tools.lab import frequencies_heard

FIRST_HZ = 1000          # 101's voice in the message left while the main host is up
B4_HZ = 1800             # 101's voice in the message left while it is down
GREETING_HZ = 1400       # 102's uploaded greeting


def _tone_wav(path, hz, seconds):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
                               for i in range(int(8000 * seconds))))


def _leave(lab, hz, tag, speak_s=2.0):
    """101 (sending hz) calls 102 (not registered: its mailbox), waits for the greeting and the
    beep (both GREETING_HZ: 1.5 s and 0.4 s), speaks speak_s, hangs up; (connected and the
    greeting and beep heard, the caller's recording)."""
    phone = ConsolePhone(lab, "101", tag, "--send", "tone:%d" % hz)
    try:
        connected = leave(phone, "102", speak_s, tone_ms=1700)
    finally:
        phone.quit()
    return connected, phone.wav


def _copy(lab):
    """Site A's copy of 102's mailbox: [(caller, state, origin)], and whether it has 102's greeting."""
    with VoicemailStore(lab.path("upbx-remote-site-a.sqlite.voicemail")) as store:
        return [(m["caller"], m["state"], m["origin"]) for m in store.messages("102")], store.greeting("102") is not None


def _main_state(lab):
    try:
        return lab.status("site-a")["main"]["state"]
    except OSError:
        return None


def voicemail_b4(lab, seconds):
    """102's voicemail on and an uploaded greeting (1400 Hz); 101 leaves a message (1000 Hz) with the
    main host up: site A's remote host gets a copy. The main host is killed (-9). 101 calls 102
    again: it hears the uploaded greeting from site A's host and leaves another (1800 Hz). 102 dials
    `!voicemail` there, plays the main host's message (1), deletes it (7), plays the new one (1).
    The main host restarts: the deletion reaches it once, the new message is uploaded once."""
    lab.admin("voicemail", "on", "102")
    wav = lab.path("greeting-102.wav")
    _tone_wav(wav, GREETING_HZ, 1.5)
    lab.admin("voicemail", "greeting", "102", wav)
    lab.wait_sites_current()                         # the setting reaches site A's host
    lab.wait_for(lambda: _copy(lab)[1], "site A's copy of 102's greeting", timeout=WAIT_S)
    _leave(lab, FIRST_HZ, "vmb4-101-up")
    lab.wait_for(lambda: _copy(lab) == ([("101", "new", "main")], True), "site A's copy of 102's mailbox", timeout=WAIT_S)
    copy_before = _copy(lab)
    lab.kill("main")
    lab.wait_for(lambda: _main_state(lab) != "up", "site A noticed the main host is gone", timeout=WAIT_S)
    connected, caller_wav = _leave(lab, B4_HZ, "vmb4-101-down")
    labels = {"greeting": (GREETING_HZ,), "main's message": (FIRST_HZ,), "b4 message": (B4_HZ,)}
    caller_heard = [h for h in frequencies_heard(caller_wav, labels) if h != "quiet"]
    phone = ConsolePhone(lab, "102", "vmb4-102")
    try:
        since = phone.mark()
        phone.command("!voicemail")
        answered = phone.wait_line("connected") and phone.wait_heard(sound, "sound", 500, since) is not None
        since = phone.mark()
        phone.command("!dtmf 1")                     # new first: the main host's message
        played = phone.wait_heard(labels, "main's message", 1500, since) is not None
        since = phone.mark()
        phone.command("!dtmf 7")                     # deleted here ("Message deleted.")
        played = played and phone.wait_heard(sound, "sound", 500, since) is not None
        since = phone.mark()
        phone.command("!dtmf 1")                     # now the one recorded here
        played = played and phone.wait_heard(labels, "b4 message", 1500, since) is not None
        phone.command("!hangup")
        phone.wait_line("call ended")
    finally:
        phone.quit()
    retrieval_heard = [h for h in frequencies_heard(phone.wav, labels) if h in ("main's message", "b4 message")]
    site = lab.status("site-a")
    pending = {"changes": site["mailbox_changes_pending"], "messages": site["voicemail_pending"]}
    lab.restart("main")
    lab.wait_for(lambda: _main_state(lab) == "up" and lab.status("site-a")["mailbox_changes_pending"] == 0
                 and lab.status("site-a")["voicemail_pending"] == 0, "the changes reached the main host", timeout=WAIT_S)
    after = [(m["caller"], m["origin"], m["state"]) for m in json.loads(lab.admin("voicemail", "list", "102", "--json"))]
    ok = (copy_before == ([("101", "new", "main")], True) and connected and caller_heard[:1] == ["greeting"]
          and answered and played and retrieval_heard == ["main's message", "b4 message"]
          and pending == {"changes": 2, "messages": 1} and after == [("101", "site-a", "saved")])
    return {"ok": ok, "copy_at_site_a": copy_before[0], "greeting_copied": copy_before[1],
            "b4_caller_heard": caller_heard, "b4_retrieval_heard": retrieval_heard,
            "waiting_for_the_main_host": pending, "main_mailbox_after": after}
