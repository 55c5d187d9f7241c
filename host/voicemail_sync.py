"""A site's mailboxes at its remote host: a copy kept current while the main host is up, and the
saves and deletes made while it is away sent back exactly once (docs/features.md, Voicemail, B4).

The main host is the mailboxes' home (host/voicemail.py). For each logged-in remote host it keeps
the site's copy current with **MAILBOX** (0x1E) blobs, chunked as the system information is
(common/chunks.py) and sent one at a time, each acknowledged before the next:

    listing    {"kind": "listing", "messages": {uid: [mailbox, caller, received_ms, state]},
                "greetings": {mailbox: hash}}                the site's mailboxes as they are now
    message    {"kind": "message", "uid", "mailbox", "caller", "received_ms", "state"} + mu-law
    greeting   {"kind": "greeting", "mailbox", "hash"} + mu-law  (an uploaded greeting)

(a JSON line, then the audio). The main host sends a listing at each login of the remote host and
whenever one of the site's mailboxes changes (a message left, uploaded, heard, saved or deleted, a
greeting set or unset with `upbx admin`). The remote host brings its copy in line with a listing:
messages gone from it are deleted here, states follow, greetings not listed are dropped, and it
answers with what it lacks (`want`), which the main host then sends.

The remote host speaks in **MAILBOX_CHANGE** (0x1B), IE data a JSON object:

    {"ack": version}                          a MAILBOX blob arrived whole
    {"want": [uid, ...], "greetings": [mailbox, ...]}   after a listing
    {"id": n, "uid": uid, "op": "save"|"delete"}        a change made by *97 while the main host was away

and the main host answers a change with MAILBOX_CHANGE {"done": n} once it has applied it. Applying
is idempotent (saving a saved message, deleting one already gone, change nothing) and the remote
host forgets a change only on its "done": so each change takes effect exactly once, whatever is
lost or resent. A change waits in the remote host's store (table `changes`) until then; a listing
leaves a message with a change waiting as it is here (the change will bring the main host's copy
in line, and a new listing follows it).

Messages recorded by the remote host while the main host was away are uploaded as before
(host/voicemail_upload.py, with their state); once stored by the main host they are listed, and the
remote host, which has them, does not want them again.
"""
import hashlib
import json

from upbx.common import wire
from upbx.common.chunks import Reassembly, chunk_ies
from upbx.host.voicemail_upload import MAX_CHUNKS, QUEUED_MAX

STATES = ("new", "saved")


def greeting_hash(ulaw):
    return hashlib.sha256(ulaw).hexdigest()[:16]


def _blob(header, audio=b""):
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + audio


def _data(ies):
    """The JSON object in a MAILBOX_CHANGE; ValueError when it is none."""
    value = json.loads(ies.get(wire.IE_DATA, b"").decode())
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _uid(value):
    if not isinstance(value, str) or len(value) != 16 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("bad uid %r" % (value,))
    return value


class _Outbox:
    """The blobs waiting for one remote host, one in flight (acknowledged by its version)."""

    def __init__(self, link):
        self.link = link
        self.queue = []          # ("listing", None) / ("message", uid) / ("greeting", mailbox)
        self.version = 0
        self.in_flight = None    # the version sent and not yet acknowledged
        self.chunks = []


class MailboxSender:
    """The main host's side: each remote host's copy of its site's mailboxes kept current."""

    def __init__(self, host):
        self.host = host
        self.outboxes = {}       # remote host name -> _Outbox

    @property
    def store(self):
        return self.host.voicemail.store

    def _mailboxes(self, site):
        return [e.number for e in self.host.directory.extensions(site)]

    def listing(self, site):
        store = self.store
        messages, greetings = {}, {}
        for mailbox in self._mailboxes(site):
            for m in store.messages(mailbox):
                messages[m["uid"]] = [m["mailbox"], m["caller"], m["received_ms"], m["state"]]
            own = store.greeting(mailbox)
            if own is not None:
                greetings[mailbox] = greeting_hash(own[1])
        return {"kind": "listing", "messages": messages, "greetings": greetings}

    def logged_in(self, link, now):
        """A remote host logged in: a fresh outbox, and the listing first."""
        if self.store is None:
            return
        self.outboxes[link.name] = _Outbox(link)
        self._enqueue(link.name, ("listing", None), now)

    def logged_out(self, link):
        box = self.outboxes.get(link.name)
        if box is not None and box.link is link:
            del self.outboxes[link.name]

    def mailbox_changed(self, mailbox, now):
        """A mailbox changed here: its site's remote host gets a new listing."""
        site = self.host.directory.site_of_extension(mailbox) if mailbox else None
        for name, box in list(self.outboxes.items()):
            if site is None or self.host._site_of(box.link) == site:
                self._enqueue(name, ("listing", None), now)

    def _enqueue(self, name, item, now):
        box = self.outboxes[name]
        if item not in box.queue:
            box.queue.append(item)
        self._next(box, now)

    def _next(self, box, now):
        if box.in_flight is not None or not box.queue:
            return
        kind, key = box.queue.pop(0)
        store = self.store
        site = self.host._site_of(box.link)
        if kind == "listing":
            blob = _blob(self.listing(site))
        elif kind == "message":
            message = store.message(key)
            if message is None or message["mailbox"] not in self._mailboxes(site):
                return self._next(box, now)            # deleted meanwhile
            header = dict({k: message[k] for k in ("uid", "mailbox", "caller", "received_ms", "state")},
                          kind="message")
            blob = _blob(header, store.audio(message))
        else:
            own = store.greeting(key)
            if own is None:
                return self._next(box, now)
            blob = _blob({"kind": "greeting", "mailbox": key, "hash": greeting_hash(own[1])}, own[1])
        box.version = box.version % 0xFFFFFFFF + 1
        box.in_flight = box.version
        box.chunks = chunk_ies(box.version, blob)
        self.host.stats.count("mailbox %ss sent" % kind)
        self._pump(box, now)

    def _pump(self, box, now):
        channel = box.link.session.channel if box.link.session is not None else None
        while box.chunks and channel is not None and channel.pending() < QUEUED_MAX:
            box.link.send_signal(wire.MAILBOX, box.chunks.pop(0), now)

    def pump(self, now):
        """Every tick: more chunks of each blob in flight, as each session has room."""
        for box in self.outboxes.values():
            if box.chunks:
                self._pump(box, now)

    def receive(self, link, ies, now):
        """MAILBOX_CHANGE from a remote host: an acknowledgement, what it wants, or a change."""
        box = self.outboxes.get(link.name)
        if link.kind != "host" or box is None or box.link is not link:
            self.host.stats.drop("mailbox change not from a remote host")
            return
        try:
            data = _data(ies)
            if "ack" in data:
                if data["ack"] == box.in_flight:
                    box.in_flight = None
                    box.chunks = []
                    self._next(box, now)
            elif "want" in data:
                site = self.host._site_of(link)
                mailboxes = set(self._mailboxes(site))
                for uid in data["want"]:
                    message = self.store.message(_uid(uid))
                    if message is not None and message["mailbox"] in mailboxes:
                        self._enqueue(link.name, ("message", uid), now)
                for mailbox in data.get("greetings", ()):
                    if mailbox in mailboxes:
                        self._enqueue(link.name, ("greeting", mailbox), now)
            else:
                self._change(link, data, now)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            self.host.stats.drop("bad mailbox change")
            self.host.log.warning("bad-mailbox-change", host=link.name, error=str(exc))

    def _change(self, link, data, now):
        """A save or delete made at the remote host while the main host was away: applied once."""
        change_id, uid, op = data["id"], _uid(data["uid"]), data["op"]
        if op not in ("save", "delete") or not isinstance(change_id, int) or isinstance(change_id, bool):
            raise ValueError("bad change %r" % (data,))
        message = self.store.message(uid)
        site = self.host._site_of(link)
        applied = False
        if message is not None:
            if self.host.directory.site_of_extension(message["mailbox"]) != site:
                raise ValueError("mailbox %s is not of site %s" % (message["mailbox"], site))
            if op == "delete":
                applied = self.store.delete(uid)
            elif message["state"] != "saved":
                self.store.save(uid)
                applied = True
        self.host.stats.count("mailbox changes applied" if applied else "mailbox changes already done")
        self.host.log.info("mailbox-change", host=link.name, uid=uid, op=op, applied=applied)
        link.send_signal(wire.MAILBOX_CHANGE, {wire.IE_DATA: json.dumps({"done": change_id}).encode()}, now)
        if applied:
            self.host.voicemail.mailbox_changed(message["mailbox"], now)


class MailboxCache:
    """The remote host's side: its copy of the site's mailboxes, and its changes sent back."""

    def __init__(self, host):
        self.host = host
        self.join = Reassembly(MAX_CHUNKS)
        self.change_in_flight = None

    @property
    def store(self):
        return self.host.voicemail.store

    def _send(self, data, now):
        self.host.main_link.send_signal(wire.MAILBOX_CHANGE, {wire.IE_DATA: json.dumps(data).encode()}, now)

    def start(self, now):
        """Logged in (again): the changes made meanwhile go first, one at a time."""
        self.join = Reassembly(MAX_CHUNKS)
        self.change_in_flight = None
        self.next_change(now)

    def stop(self):
        self.change_in_flight = None

    def next_change(self, now):
        store = self.store
        if store is None or self.change_in_flight is not None or not self.host.main_link.up:
            return
        pending = store.pending_changes()
        if pending:
            change_id, uid, op = pending[0]
            self.change_in_flight = change_id
            self._send({"id": change_id, "uid": uid, "op": op}, now)
            self.host.stats.count("mailbox changes sent")

    def message(self, msg_type, ies, now):
        """MAILBOX (a chunk of a blob) or MAILBOX_CHANGE (a change done) from the main host."""
        store = self.store
        if store is None:
            return
        if msg_type == wire.MAILBOX_CHANGE:
            try:
                done = _data(ies).get("done")
            except (ValueError, UnicodeDecodeError):
                done = None
            if done is None or done != self.change_in_flight:
                self.host.stats.drop("mailbox change done out of turn")
                return
            store.forget_change(done)
            self.change_in_flight = None
            self.host.stats.count("mailbox changes done")
            return self.next_change(now)
        blob = self.join.add(ies)
        if blob is None:
            return
        version = self.join.version
        try:
            line, _sep, audio = blob.partition(b"\n")
            header = json.loads(line)
            kind = header["kind"]
            if kind == "listing":
                self._listing(header, now)
            elif kind == "message":
                self._cached_message(header, audio)
            elif kind == "greeting":
                if audio and len(audio) % wire.VOICE_BYTES == 0 and self.host.cache.extension(header["mailbox"]):
                    store.set_greeting(header["mailbox"], header["hash"], audio)
            else:
                raise ValueError("unknown kind %r" % (kind,))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            self.host.stats.drop("bad mailbox")
            self.host.log.warning("bad-mailbox", error=str(exc))
        self._send({"ack": version}, now)     # whole: the next may come (a bad one is not asked again)

    def _cached_message(self, header, audio):
        uid, mailbox = _uid(header["uid"]), header["mailbox"]
        if self.host.cache.extension(mailbox) is None or header["state"] not in STATES:
            raise ValueError("message %s is not for this site" % uid)
        if not audio or len(audio) % wire.VOICE_BYTES:
            raise ValueError("bad audio length %d" % len(audio))
        if self.store.add_message(uid, mailbox, header["caller"], header["received_ms"], audio, "main",
                                  state=header["state"], uploaded=True):
            self.host.stats.count("mailbox messages cached")

    def _listing(self, header, now):
        """The site's mailboxes as the main host has them: this copy follows; what it lacks is asked for."""
        store = self.store
        listed = header["messages"]
        changing = {uid for _id, uid, _op in store.pending_changes()}
        for m in store.cached_messages():
            uid = m["uid"]
            if uid in changing:
                continue
            if uid not in listed:
                store.delete(uid, track=False)
            elif listed[uid][3] in STATES and listed[uid][3] != m["state"]:
                store.set_state(uid, listed[uid][3])
        want = [uid for uid in listed if uid not in changing and store.message(uid) is None
                and self.host.cache.extension(listed[uid][0]) is not None]
        greetings = header.get("greetings") or {}
        for mailbox in self.host.cache.extensions:
            own = store.greeting(mailbox)
            if own is not None and mailbox not in greetings:
                store.unset_greeting(mailbox)
        want_greetings = [mb for mb, h in greetings.items()
                          if self.host.cache.extension(mb) is not None and (store.greeting(mb) or ("",))[0] != h]
        if want or want_greetings:
            self._send({"want": want, "greetings": want_greetings}, now)
