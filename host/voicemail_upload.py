"""B4: the messages a remote host recorded while the main host was away, uploaded exactly once.

As call records are (host/records.py): the remote host keeps each message (its VoicemailStore)
until the main host acknowledges it. One message at a time goes up in VOICEMAIL messages
(0x42), chunked as the system information is (common/chunks.py): the body is a JSON header
line, then the mu-law audio. The main host stores it under its uid (the call's id), which it
stores once whatever happens (a resend after a lost acknowledgement, a restart), and answers
VOICEMAIL with `call_id` = the uid; the remote host then marks it uploaded and sends the next.
"""
import json

from upbx.common import wire
from upbx.common.chunks import Reassembly, chunk_ies
from upbx.host.voicemail import MAX_MESSAGE_MS

MAX_CHUNKS = (MAX_MESSAGE_MS * 8 + 1024) // 250 + 1
QUEUED_MAX = 256     # chunks waiting in the session at once: a 120 s message is 3,841 of them, and
                     # the session fails beyond 4,096 waiting (call records go up the same way)


def encode(message, ulaw):
    header = {k: message[k] for k in ("uid", "mailbox", "caller", "received_ms", "state")}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + ulaw


def decode(blob):
    """(header dict, mu-law bytes); ValueError when malformed."""
    line, sep, ulaw = blob.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    uid = header.get("uid")
    if not isinstance(uid, str) or len(uid) != 16 or any(c not in "0123456789abcdef" for c in uid):
        raise ValueError("bad uid %r" % (uid,))
    for key in ("mailbox", "caller"):
        if not isinstance(header.get(key), str) or len(header[key]) > 31:
            raise ValueError("bad %s" % key)
    if not isinstance(header.get("received_ms"), int) or isinstance(header["received_ms"], bool):
        raise ValueError("bad received_ms")
    if header.get("state", "new") not in ("new", "saved"):    # saved (heard) while the main host was away
        raise ValueError("bad state")
    if not ulaw or len(ulaw) % wire.VOICE_BYTES or len(ulaw) > MAX_MESSAGE_MS * 8:
        raise ValueError("bad audio length %d" % len(ulaw))
    return header, ulaw


class Uploader:
    """The remote host's side: one message in flight, the next when it is acknowledged."""

    def __init__(self, host):
        self.host = host
        self.in_flight = None
        self.chunks = []         # the in-flight message's chunks not yet handed to the session

    def start(self, now):
        """Logged in (again): send what is pending."""
        self.in_flight = None
        self.chunks = []
        self.next(now)

    def stop(self):
        self.in_flight = None
        self.chunks = []

    def pump(self, now):
        """Every tick: more of the message's chunks, as the session has room for them."""
        login = self.host.login
        while self.chunks and login.channel is not None and login.channel.pending() < QUEUED_MAX:
            self.host.main_link.send_signal(wire.VOICEMAIL, self.chunks.pop(0), now)

    def next(self, now):
        host = self.host
        store = host.voicemail.store
        if store is None or self.in_flight is not None or not host.main_link.up:
            return
        pending = store.pending_upload()
        if not pending:
            return
        message = store.message(pending[0])
        blob = encode(message, store.audio(message))
        self.chunks = chunk_ies(int(message["uid"][:8], 16), blob)
        self.in_flight = message["uid"]
        self.pump(now)
        host.stats.count("voicemail uploads sent")

    def acknowledged(self, ies, now):
        uid = ies.get(wire.IE_CALL_ID, b"").hex()
        store = self.host.voicemail.store
        if store is None or uid != self.in_flight:
            self.host.stats.drop("voicemail ack out of turn")
            return
        store.mark_uploaded(uid)
        self.in_flight = None
        self.host.stats.count("voicemail uploaded")
        self.next(now)


class Receiver:
    """The main host's side: joins a remote host's chunks, stores the message once, acknowledges."""

    def __init__(self, host):
        self.host = host
        self.joins = {}          # remote host name -> Reassembly

    def receive(self, link, ies, now):
        host = self.host
        if link.kind != "host" or host.voicemail.store is None:
            host.stats.drop("voicemail upload not from a remote host")
            return
        join = self.joins.setdefault(link.name, Reassembly(MAX_CHUNKS))
        blob = join.add(ies)
        if blob is None:
            return
        site = host._site_of(link)
        try:
            header, ulaw = decode(blob)
            if host.directory.site_of_extension(header["mailbox"]) != site:
                raise ValueError("mailbox %s is not of site %s" % (header["mailbox"], site))
        except ValueError as exc:
            host.stats.drop("bad voicemail upload")
            host.log.warning("bad-voicemail", host=link.name, error=str(exc))
            return
        stored = host.voicemail.store.add_message(header["uid"], header["mailbox"], header["caller"],
                                                  header["received_ms"], ulaw, link.name,
                                                  state=header.get("state", "new"))
        host.stats.count("voicemail uploads stored" if stored else "voicemail uploads duplicate")
        host.log.info("voicemail-upload", host=link.name, mailbox=header["mailbox"], uid=header["uid"], stored=stored)
        link.send_signal(wire.VOICEMAIL, {wire.IE_CALL_ID: bytes.fromhex(header["uid"])}, now)
        if stored:
            host.voicemail.mailbox_changed(header["mailbox"], now)
