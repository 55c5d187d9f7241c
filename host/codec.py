"""A-law phones at a host: the phone's own host converts at the edge (docs/features.md, A-law phones).

Between hosts, and inside every host (music on hold, the conference mixer, voicemail, paging),
voice is G.711 mu-law, the handsets' default. A phone set to A-law (`codec = "alaw"` in its
configuration, `upbx phone --codec alaw`) names its codec in the SETUP it sends and the ALERTING it
answers a SETUP with (IE codec, 8); its host notes that on the phone's link (`note`) and converts
every voice frame from that phone to mu-law as it arrives (`Switch.mini_in`) and every frame to it
back to A-law as it leaves (`Switch.send_media`). A 256-byte table per direction and
`bytes.translate`: one C call per frame. A comfort-noise frame (one level byte) is left as it is.

A-law to mu-law and back is G.711's own pair of tables (ITU-T G.711 tables 3 and 4 are built
the same way: decode, re-encode); a frame converted twice is not the frame sent for a few codes
near zero and at full scale, which no listener tells apart.
"""
from upbx.common import wire
from upbx.common.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

_CODES = bytes(range(256))
ALAW_TO_ULAW = ulaw_encode(alaw_decode(_CODES))
ULAW_TO_ALAW = alaw_encode(ulaw_decode(_CODES))
NAMES = {wire.CODEC_ULAW: "ulaw", wire.CODEC_ALAW: "alaw"}


def note(link, ies, stats):
    """A phone's SETUP or ALERTING named its codec: kept on its link for the registration (a codec
    upbx does not know is counted `bad codec` and ignored: the message itself goes on)."""
    codec = ies.get(wire.IE_CODEC)
    if codec is not None and link.kind == "phone":
        if codec in NAMES:
            link.codec = codec
        else:
            stats.drop("bad codec")


def from_phone(link, payload):
    """A voice frame from link's phone, as mu-law."""
    if link.codec == wire.CODEC_ALAW and len(payload) == wire.VOICE_BYTES:
        return bytes(payload).translate(ALAW_TO_ULAW)
    return payload


def to_phone(link, payload):
    """A mu-law voice frame for link's phone, in its codec."""
    if link.codec == wire.CODEC_ALAW and len(payload) == wire.VOICE_BYTES:
        return bytes(payload).translate(ULAW_TO_ALAW)
    return payload
