"""Voicemail: a host-side endpoint that answers calls, plays prompts, records messages and
reads the DTMF menu (docs/features.md, Voicemail).

Numbers the endpoint answers (dialled like any number; a host routes them here):

    *97    the caller's own mailbox: the DTMF menu (MENU below)
    *98N   leave a message for extension N: where a host diverts an unanswered call to N
           whose voicemail is on (no answer, busy, do not disturb, not registered)

A message is kept as a WAV (8 kHz, 16-bit) in `FOLDER/messages/MAILBOX/UID.wav` with a row in
`FOLDER/voicemail.sqlite`; FOLDER is the main host's database path + ".voicemail" (a remote host
keeps the messages it records while the main host is away beside its records database, and
uploads each once: host/remote_host.py). The endpoint is sans-IO as the host cores are: the
host calls `tick(now)` every 20 ms; SETUP, DTMF and RELEASE arrive through its Link.
"""
import json
import os
import sqlite3
import wave

from upbx.common import wire
from upbx.common.call import CALLING, RINGBACK
from upbx.common.g711 import ulaw_decode, ulaw_encode
from upbx.host import prompts
from upbx.host.files import private_database
from upbx.host.switch import KEEP_CN, KEEP_MS, Link

RETRIEVE = "*97"
DEPOSIT = "*98"
MAX_MESSAGE_MS = 120000
MAX_GREETING_S = 60
DIVERT_CAUSES = (wire.CAUSE_BUSY, wire.CAUSE_NO_ANSWER, wire.CAUSE_DND, wire.CAUSE_UNREACHABLE)
# the DTMF menu of *97 (the digits of Asterisk's VoiceMailMain, which many users know)
PLAY, NEXT, DELETE, SAVE, HELP = "1", "6", "7", "9", "0"
MENU = ("Press 1 to play the message, 6 for the next message, 7 to delete it, 9 to save it, "
        "0 to hear this again.")
END_DIGIT = "#"          # ends a message being left (hanging up does too)


class VoicemailError(ValueError):
    """A greeting or setting that cannot be used; str() names the file or key and what is wrong."""


def mailbox_of(called):
    """The mailbox a *98N number leaves a message in, else None."""
    if called.startswith(DEPOSIT) and called[3:].isdigit() and 1 <= len(called) - 3 <= 15:
        return called[3:]
    return None


def is_voicemail_number(called):
    return called == RETRIEVE or mailbox_of(called) is not None


def divert(number, cause, settings):
    """The number an unanswered call to number goes to instead of ending with cause: its
    mailbox (*98N) when its voicemail is on and cause is one voicemail takes, else None."""
    if settings.get("voicemail") and cause in DIVERT_CAUSES:
        return DEPOSIT + number
    return None


def load_wav(path, most_s=MAX_GREETING_S):
    """mu-law bytes (whole frames) of an 8 kHz mono 16-bit WAV; VoicemailError naming the file otherwise."""
    try:
        with wave.open(str(path)) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (prompts.RATE, 1, 2):
                raise VoicemailError("%s: must be 8000 Hz, mono, 16-bit (this is %d Hz, %d channel(s), %d-bit)"
                                     % (path, w.getframerate(), w.getnchannels(), 8 * w.getsampwidth()))
            pcm = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise VoicemailError("%s: cannot read: %s" % (path, exc)) from None
    if len(pcm) < 2 * prompts.FRAME:
        raise VoicemailError("%s: shorter than one 20 ms frame" % path)
    if len(pcm) > 2 * prompts.RATE * most_s:
        raise VoicemailError("%s: longer than %d s (%.1f s)" % (path, most_s, len(pcm) / 2 / prompts.RATE))
    return b"".join(prompts.frames_of_ulaw(ulaw_encode(pcm)))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    uid TEXT PRIMARY KEY,            -- the call id of the call that left it (hex): stored once
    mailbox TEXT NOT NULL,
    caller TEXT NOT NULL,
    received_ms INTEGER NOT NULL,    -- wall clock, ms since 1970
    duration_ms INTEGER NOT NULL,
    file TEXT NOT NULL,              -- relative to the folder
    state TEXT NOT NULL,             -- "new", or "saved" (heard or saved from the menu)
    origin TEXT NOT NULL,            -- "main", or the remote host that recorded it (B4)
    uploaded INTEGER NOT NULL DEFAULT 0,
    seq INTEGER
);
CREATE TABLE IF NOT EXISTS changes (     -- a remote host's saves and deletes for the main host (B4)
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL, op TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS greetings (mailbox TEXT PRIMARY KEY, name TEXT NOT NULL, ulaw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS attendants (number TEXT PRIMARY KEY, data TEXT NOT NULL, prompt BLOB);
"""


class VoicemailStore:
    """Messages (WAV files + SQLite rows), greetings and auto-attendants in one folder."""

    def __init__(self, folder):
        self.folder = str(folder)
        for path in (self.folder, os.path.join(self.folder, "messages")):   # who called whom: 0700
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        self.path = os.path.join(self.folder, "voicemail.sqlite")
        self.warnings = private_database(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(_SCHEMA)
        self.version = self._data_version()

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _data_version(self):
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    # messages

    track_changes = False    # a remote host's store: saves and deletes of the main host's messages are
                             # kept in `changes` for it (host/voicemail_sync.py)

    def add_message(self, uid, mailbox, caller, received_ms, ulaw, origin, state="new", uploaded=False):
        """Store one message (mu-law bytes); False when a message with uid is stored already.
        uploaded: the main host has it (a remote host's copy of the main host's, or one it uploaded)."""
        if self.db.execute("SELECT 1 FROM messages WHERE uid = ?", (uid,)).fetchone():
            return False
        rel = os.path.join("messages", mailbox, uid + ".wav")
        path = os.path.join(self.folder, rel)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(prompts.RATE)
            w.writeframes(ulaw_decode(ulaw))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        seq = self.db.execute("SELECT coalesce(max(seq), 0) + 1 FROM messages").fetchone()[0]
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO messages (uid, mailbox, caller, received_ms, duration_ms, file, state, origin, seq, "
            "uploaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uid, mailbox, caller, received_ms, len(ulaw) * 1000 // prompts.RATE, rel,
             "saved" if state == "saved" else "new", origin, seq, 1 if uploaded else 0))
        return cursor.rowcount == 1

    def messages(self, mailbox):
        """A mailbox's messages as dicts: new ones first, then saved ones, each oldest first."""
        rows = self.db.execute("SELECT uid, mailbox, caller, received_ms, duration_ms, file, state, origin FROM messages "
                               "WHERE mailbox = ? ORDER BY state = 'saved', received_ms, seq", (mailbox,))
        keys = ("uid", "mailbox", "caller", "received_ms", "duration_ms", "file", "state", "origin")
        return [dict(zip(keys, row)) for row in rows]

    def counts(self, mailbox):
        """(new, saved) messages in a mailbox."""
        new = saved = 0
        for state, n in self.db.execute("SELECT state, count(*) FROM messages WHERE mailbox = ? GROUP BY state",
                                        (mailbox,)):
            if state == "new":
                new = n
            else:
                saved = n
        return new, saved

    def audio(self, message):
        """A message's mu-law bytes."""
        with wave.open(os.path.join(self.folder, message["file"])) as w:
            return ulaw_encode(w.readframes(w.getnframes()))

    def save(self, uid):
        self._track(uid, "save")
        self.set_state(uid, "saved")

    def set_state(self, uid, state):
        self.db.execute("UPDATE messages SET state = ? WHERE uid = ?", (state, uid))

    def _track(self, uid, op):
        """A remote host's change to a message the main host has: kept until the main host has it."""
        if self.track_changes and self.db.execute("SELECT 1 FROM messages WHERE uid = ? AND uploaded = 1",
                                                  (uid,)).fetchone():
            self.db.execute("INSERT INTO changes (uid, op) VALUES (?, ?)", (uid, op))

    def pending_changes(self):
        """[(id, uid, op)] of the changes the main host has not confirmed, oldest first."""
        return self.db.execute("SELECT id, uid, op FROM changes ORDER BY id").fetchall()

    def forget_change(self, change_id):
        self.db.execute("DELETE FROM changes WHERE id = ?", (change_id,))

    def cached_messages(self):
        """The messages the main host has (uploaded = 1), as dicts with uid and state."""
        return [{"uid": u, "state": s} for u, s in self.db.execute("SELECT uid, state FROM messages WHERE uploaded = 1")]

    def delete(self, uid, track=True):
        row = self.db.execute("SELECT file FROM messages WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            return False
        if track:
            self._track(uid, "delete")
        self.db.execute("DELETE FROM messages WHERE uid = ?", (uid,))
        try:
            os.remove(os.path.join(self.folder, row[0]))
        except OSError:
            pass
        return True

    def pending_upload(self):
        """Messages recorded here (a remote host, B4) that the main host has not acknowledged."""
        return [row[0] for row in self.db.execute("SELECT uid FROM messages WHERE uploaded = 0 ORDER BY seq")]

    def message(self, uid):
        row = self.db.execute("SELECT uid, mailbox, caller, received_ms, duration_ms, file, state, origin "
                              "FROM messages WHERE uid = ?", (uid,)).fetchone()
        keys = ("uid", "mailbox", "caller", "received_ms", "duration_ms", "file", "state", "origin")
        return dict(zip(keys, row)) if row else None

    def mark_uploaded(self, uid):
        self.db.execute("UPDATE messages SET uploaded = 1 WHERE uid = ?", (uid,))

    # greetings (a mailbox's own; else the default spoken by espeak-ng)

    def set_greeting(self, mailbox, name, ulaw):
        self.db.execute("INSERT OR REPLACE INTO greetings VALUES (?, ?, ?)", (mailbox, name, ulaw))

    def unset_greeting(self, mailbox):
        self.db.execute("DELETE FROM greetings WHERE mailbox = ?", (mailbox,))

    def greeting(self, mailbox):
        """(name, mu-law bytes) of a mailbox's own greeting, or None."""
        row = self.db.execute("SELECT name, ulaw FROM greetings WHERE mailbox = ?", (mailbox,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    # auto-attendants (host/attendant.py)

    def set_attendant(self, number, data, prompt=None):
        self.db.execute("INSERT OR REPLACE INTO attendants VALUES (?, ?, ?)", (number, json.dumps(data), prompt))

    def remove_attendant(self, number):
        return self.db.execute("DELETE FROM attendants WHERE number = ?", (number,)).rowcount == 1

    def attendants(self):
        """{number: (data dict, prompt mu-law bytes or None)}."""
        return {n: (json.loads(d), bytes(p) if p is not None else None)
                for n, d, p in self.db.execute("SELECT number, data, prompt FROM attendants ORDER BY number")}

    def changed(self):
        """True once after another connection (`upbx admin`) changed the database."""
        version = self._data_version()
        if version != self.version:
            self.version = version
            return True
        return False


class AppLink(Link):
    """The link of the host's own endpoint: signalling to it is handled in the host, media to it
    is recorded (host/switch.py, Switch.send_media)."""

    def __init__(self, endpoint):
        Link.__init__(self, "voicemail", "app")
        self.endpoint = endpoint

    def send_signal(self, msg_type, ies, now):
        self.endpoint.signal(msg_type, ies, now)
        return True

    def media(self, leg, ts, payload):
        self.endpoint.media(leg, ts, payload)


class Session:
    """One call the endpoint answered: what it plays (a queue of frames, and of texts to speak)
    and what it does with what it hears and the digits it reads. A subclass fills in the behaviour."""

    def __init__(self, endpoint, leg, caller, now):
        self.endpoint = endpoint
        self.leg = leg
        self.caller = caller
        self.started_ms = now
        self.answered = False
        self.ts = 0
        self.queue = []          # frames still to play, in order; a str: a prompt, its frames when made
        self.hangup = False      # release once the queue has played

    def play(self, frames):
        self.queue.extend(frames)

    def say(self, text):
        """Play the prompt text: silence while the host has it spoken, then the prompt from its start
        (the texts queued behind it are spoken meanwhile)."""
        self.endpoint.prompts.prepare(text)
        self.queue.append(text)

    def interrupt(self):
        self.queue = []

    def on_answer(self, now):
        pass

    def on_frame(self, ts, payload):
        pass

    def on_dtmf(self, digit, now):
        pass

    def on_played(self, now):
        """The queue ran out."""

    def on_tick(self, now):
        pass

    def on_end(self, now):
        pass


class Deposit(Session):
    """A message for mailbox: the greeting, a beep, then up to MAX_MESSAGE_MS recorded; '#' or
    hanging up ends it. Nothing is stored when nothing was recorded."""

    def __init__(self, endpoint, leg, caller, now, mailbox):
        Session.__init__(self, endpoint, leg, caller, now)
        self.mailbox = mailbox
        self.recording = False
        self.frames = {}
        self.first_ts = None

    def on_answer(self, now):
        own = self.endpoint.store.greeting(self.mailbox)
        if own is not None:
            self.play(prompts.frames_of_ulaw(own[1]))
        else:
            self.say(prompts.GREETING)
        self.play(prompts.tone(prompts.BEEP_HZ, prompts.BEEP_MS))

    def on_played(self, now):
        self.recording = True

    def on_frame(self, ts, payload):
        if not self.recording or len(payload) != prompts.FRAME:
            return
        if self.first_ts is None:
            self.first_ts = ts
        slot = (ts - self.first_ts) // 20
        if 0 <= slot < MAX_MESSAGE_MS // 20:
            self.frames[slot] = bytes(payload)
        elif slot >= MAX_MESSAGE_MS // 20:
            self.hangup = True       # full: the call ends (the tick releases it)

    def on_dtmf(self, digit, now):
        if digit == END_DIGIT and self.recording:
            self.hangup = True

    def on_end(self, now):
        if not self.frames:
            return
        last = max(self.frames)
        ulaw = b"".join(self.frames.get(i, prompts.SILENCE) for i in range(last + 1))
        self.endpoint.store_message(self.leg.call.uid, self.mailbox, self.caller, ulaw, now)


class Retrieval(Session):
    """The caller's own mailbox: how many messages, the menu, and the digits of MENU."""

    def __init__(self, endpoint, leg, caller, now):
        Session.__init__(self, endpoint, leg, caller, now)
        self.store = endpoint.store
        self.messages = self.store.messages(caller)
        self.current = 0

    def on_answer(self, now):
        new = sum(1 for m in self.messages if m["state"] == "new")
        self.say("You have %d new and %d saved messages." % (new, len(self.messages) - new))
        self.say(MENU)

    def _message(self):
        return self.messages[self.current] if self.current < len(self.messages) else None

    def on_dtmf(self, digit, now):
        self.interrupt()
        message = self._message()
        if digit == NEXT:
            self.current = min(self.current + 1, len(self.messages))
            message = self._message()
            digit = PLAY
        if digit == HELP:
            return self.say(MENU)
        if digit not in (PLAY, DELETE, SAVE):
            return self.say("Not a choice. " + MENU)
        if message is None:
            return self.say("No more messages.")
        if digit == PLAY:
            self.play(prompts.frames_of_ulaw(self.store.audio(message)))
            self.play(prompts.tone(prompts.BEEP_HZ, 200))
            if message["state"] == "new":      # heard: no longer new (the message-waiting count drops)
                message["state"] = "saved"
                self.store.save(message["uid"])
                self.endpoint.mailbox_changed(self.caller, now)
        elif digit == DELETE:
            self.store.delete(message["uid"])
            del self.messages[self.current]
            self.say("Message deleted.")
            self.endpoint.mailbox_changed(self.caller, now)
        elif digit == SAVE:
            message["state"] = "saved"
            self.store.save(message["uid"])
            self.say("Message saved.")
            self.endpoint.mailbox_changed(self.caller, now)


class Endpoint:
    """The host's voicemail (and auto-attendant) endpoint: one AppLink, one Session per call.

    host: the host core (host.core.HostCore) it answers for; store: a VoicemailStore or None
    (no voicemail: a *98N or *97 call is refused as an unknown number); origin: "main" or the
    remote host's name; on_change(mailbox, now): a message was stored or a mailbox changed."""

    def __init__(self, host, store, origin, on_change=None):
        self.host = host
        self.store = store
        self.origin = origin
        self.on_change = on_change
        self.link = AppLink(self)
        self._by_leg = {}        # the host's call number of the app leg -> Session
        self._next = 0
        self._answer = []        # sessions to answer at the next tick (never inside the SETUP's handling)
        self.attendants = {}     # number -> host.attendant.Attendant
        self.ringback = {}       # call routed on by the attendant -> ring-back frames played while it rings
        self._ringback_frames = None
        self.prompts = prompts.Prompts(os.path.join(store.folder, "prompts") if store is not None else None)
        self.stats = host.stats
        if store is not None:
            self.load_attendants()

    def load_attendants(self):
        from upbx.host.attendant import Attendant   # here: host/attendant.py imports this module
        self.attendants = {n: Attendant(n, data, prompt) for n, (data, prompt) in self.store.attendants().items()}
        for attendant in self.attendants.values():     # spoken now, in the background: ready for the first call
            if not attendant.ulaw:
                self.prompts.prepare(attendant.text)

    def handles(self, called):
        """True for the numbers this endpoint answers."""
        if self.store is None:
            return False
        return is_voicemail_number(called) or called in self.attendants

    # from the host's switch

    def signal(self, msg_type, ies, now):
        if msg_type == wire.SETUP:
            return self._setup(ies, now)
        session = self._by_leg.get(ies.get(wire.IE_CALL_NO))
        if session is None:
            return
        if msg_type == wire.DTMF:
            session.on_dtmf(ies.get(wire.IE_DIGIT, ""), now)
        elif msg_type == wire.RELEASE:
            self._end(session, now)

    def media(self, leg, ts, payload):
        session = self._by_leg.get(leg.call_no)
        if session is not None and session.answered:
            session.on_frame(ts, payload)

    def _setup(self, ies, now):
        leg = self.host.switch.legs.get(ies.get(wire.IE_CALL_NO))
        if leg is None:
            return
        called, caller = ies.get(wire.IE_CALLED, ""), ies.get(wire.IE_CALLING, "")
        if called == RETRIEVE:
            session = Retrieval(self, leg, caller, now)
        elif mailbox_of(called) is not None:
            session = Deposit(self, leg, caller, now, mailbox_of(called))
        else:
            session = self.attendants[called].session(self, leg, caller, now)
        self._next = self._next % wire.MAX_CALL_NO + 1
        session.number = self._next
        self._by_leg[leg.call_no] = session
        self._answer.append(session)
        self.host.log.info("voicemail-call", called=called, caller=caller, call=leg.call.uid)

    def _reply(self, session, msg_type, now, extra=None):
        ies = {wire.IE_PEER_CALL_NO: session.leg.call_no, wire.IE_CALL_NO: session.number}
        ies.update(extra or {})
        self.host.call_message(self.link, msg_type, ies, now)

    def _end(self, session, now):
        if self._by_leg.pop(session.leg.call_no, None) is not None:
            session.on_end(now)

    def release(self, session, now, cause=wire.CAUSE_NORMAL):
        """The endpoint hangs up a session's call."""
        if session.leg.call_no in self._by_leg:
            self._end(session, now)
            self._reply(session, wire.RELEASE, now, {wire.IE_CAUSE: cause})

    def route_on(self, session, number, now):
        """The auto-attendant routes its call on to number: the endpoint's leg goes, the host offers
        the call to number as a forward (host.forward_call), and the caller, answered already,
        hears ring-back from here until that leg is answered or gone."""
        call = session.leg.call
        self._by_leg.pop(session.leg.call_no, None)
        self.host.switch.drop_callee(call, wire.CAUSE_NORMAL, now)
        call.moh_last[0] = call.ts_out[0]     # what comes next carries on after what we played
        self.ringback[call] = 0
        self.host.forward_call(call, number, now)

    def _ringback(self, now):
        from upbx.host.attendant import ringback_frames
        if self._ringback_frames is None:
            self._ringback_frames = ringback_frames()
        for call, n in list(self.ringback.items()):
            if call.released or call.b is None or call.b.state not in (CALLING, RINGBACK):
                del self.ringback[call]
                continue
            ts = call.ts_out[0] + 20
            call.ts_out[0] = call.moh_last[0] = ts
            self.host.switch.send_media(call.a, ts, self._ringback_frames[n % len(self._ringback_frames)])
            self.ringback[call] = n + 1

    def tick(self, now):
        """Every 20 ms: answer new calls, one frame to every answered one, hang up finished ones."""
        if self.ringback:
            self._ringback(now)
        answer, self._answer = self._answer, []
        for session in answer:
            if self._by_leg.get(session.leg.call_no) is not session:
                continue
            session.on_answer(now)            # what it plays first (a prompt is spoken in the background)
            self._reply(session, wire.ALERTING, now)
            self._reply(session, wire.ANSWER, now)
            session.answered = True
        for session in list(self._by_leg.values()):
            if not session.answered:
                continue
            if session.queue:
                try:
                    frame = self._next_frame(session)
                except prompts.PromptError as exc:
                    self.host.log.error("voicemail-prompt", error=str(exc))
                    self.stats.count("voicemail prompt errors")
                    self.release(session, now, wire.CAUSE_UNREACHABLE)
                    continue
                self.host.switch.forward(session.leg, session.ts, frame, now)
                self.stats.count("voicemail frames out")
                if not session.queue:
                    session.on_played(now)
            elif not session.ts % KEEP_MS:
                # nothing to play (a caller at the menu, a message being left): comfort noise each second keeps the
                # caller's replay window within reach of what comes next (docs/features.md "A hold of any length")
                self.host.switch.forward(session.leg, session.ts, KEEP_CN, now)
                self.stats.count("voicemail keepalives")
            session.ts += 20
            session.on_tick(now)
            if session.hangup and not session.queue and session.leg.call_no in self._by_leg:
                self.release(session, now)

    def _next_frame(self, session):
        """The next frame of a session's queue. A prompt at its head that is still being spoken plays
        silence and stays there; once made, its frames take its place (PromptError if it failed)."""
        head = session.queue[0]
        if isinstance(head, str):
            frames = self.prompts.frames(head)
            if frames is None:
                self.stats.count("voicemail frames waiting for a prompt")
                return prompts.SILENCE
            session.queue[0:1] = frames
        return session.queue.pop(0)

    # messages

    def store_message(self, uid, mailbox, caller, ulaw, now):
        stored = self.store.add_message(uid, mailbox, caller, self.host.wall_ms(now), ulaw, self.origin)
        self.host.log.info("voicemail-message", mailbox=mailbox, caller=caller, ms=len(ulaw) // 8, stored=stored)
        self.stats.count("voicemail messages")
        self.mailbox_changed(mailbox, now)

    def mailbox_changed(self, mailbox, now):
        if self.on_change is not None:
            self.on_change(mailbox, now)
