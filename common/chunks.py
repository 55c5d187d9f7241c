"""Chunked transfers of one blob (system information, a site's directory) over a session.

Each chunk is one reliable message carrying IE_VERSION, IE_CHUNK (index << 16 | count) and
IE_DATA (at most CHUNK bytes); the reliable channel resends each until it is acknowledged,
and the receiver joins them once all of one version have arrived. Used by the hosts (to
send, and by a remote host to receive) and by the phone (to receive).
"""
from . import wire
from .compat import const

CHUNK = const(250)


def chunk_ies(version, data):
    """The IEs of each message that carries data (bytes) as version, in order."""
    count = (len(data) + CHUNK - 1) // CHUNK or 1
    return [{wire.IE_VERSION: version, wire.IE_CHUNK: (i << 16) | count, wire.IE_DATA: data[i * CHUNK:(i + 1) * CHUNK]}
            for i in range(count)]


class Reassembly:
    """Joins the chunks of one kind of transfer; a newer version discards an unfinished older one.

    At most max_chunks chunks are held (a blob larger than the receiver can take is refused:
    its chunks are ignored), and a chunk whose index is not below its count is ignored.
    """

    def __init__(self, max_chunks=4096):
        self.max_chunks = max_chunks
        self.version = None
        self._count = 0
        self._chunks = {}
        self.ignored = 0

    def add(self, ies):
        """The whole blob (bytes) once the last chunk of its version has arrived, else None."""
        version = ies.get(wire.IE_VERSION, 0)
        chunk = ies.get(wire.IE_CHUNK, 1)
        index, count = chunk >> 16, chunk & 0xFFFF
        if not count or index >= count or count > self.max_chunks:
            self.ignored += 1
            return None
        if version != self.version or count != self._count:
            self.version, self._count, self._chunks = version, count, {}
        self._chunks[index] = ies.get(wire.IE_DATA, b"")
        if len(self._chunks) < count:
            return None
        data = b"".join(self._chunks[i] for i in range(count))
        self._chunks = {}
        return data
