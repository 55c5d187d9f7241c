"""Chunked transfers of JSON objects (DIRECTORY, SYSINFO) over a session's reliable channel.

Each chunk is one message carrying IE_VERSION, IE_CHUNK (index << 16 | count) and
IE_DATA (at most CHUNK bytes); the reliable channel resends each until it is
acknowledged, and the receiver joins them once all have arrived.
"""
import json

from common import wire

CHUNK = 250


def encode(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def send_chunked(link, msg_type, version, data, now):
    """Queue data (bytes, or an object to encode) on link in chunks; returns how many."""
    if not isinstance(data, bytes):
        data = encode(data)
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    for i, chunk in enumerate(chunks):
        link.send_signal(msg_type, {wire.IE_VERSION: version, wire.IE_CHUNK: (i << 16) | len(chunks),
                                    wire.IE_DATA: chunk}, now)
    return len(chunks)


class Reassembly:
    """Joins the chunks of one kind of transfer; a newer version discards an unfinished older one."""

    def __init__(self):
        self.version = None
        self.chunks = {}

    def add(self, ies):
        """The decoded object once the last chunk of its version arrived, else None."""
        version = ies.get(wire.IE_VERSION, 0)
        chunk = ies.get(wire.IE_CHUNK, 1)
        index, count = chunk >> 16, chunk & 0xFFFF
        if version != self.version:
            self.version, self.chunks = version, {}
        self.chunks[index] = ies.get(wire.IE_DATA, b"")
        if count and len(self.chunks) == count and all(i in self.chunks for i in range(count)):
            data = b"".join(self.chunks[i] for i in range(count))
            self.chunks = {}
            return json.loads(data)
        return None
