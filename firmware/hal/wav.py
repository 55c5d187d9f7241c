"""WAV file headers for the virtual handset's microphone and speaker files (firmware/hal/unix.py).

Read when a microphone file opens and written when a speaker file opens and closes, so the unix
HAL imports this module for each of those and forgets it again (firmware.hal.rarely): the
virtual handset's heap is then what a device's would be without it.
"""


def parse_header(f):
    """Read a RIFF/WAVE header from file f; returns the data length in bytes; ValueError says what is wrong."""
    riff = f.read(12)
    if len(riff) < 12 or riff[0:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt_ok = False
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("WAV: no data chunk")
        size = head[4] | head[5] << 8 | head[6] << 16 | head[7] << 24
        if head[0:4] == b"fmt ":
            fmt = f.read(size)
            channels = fmt[2] | fmt[3] << 8
            rate = fmt[4] | fmt[5] << 8 | fmt[6] << 16 | fmt[7] << 24
            bits = fmt[14] | fmt[15] << 8
            if (fmt[0] | fmt[1] << 8) != 1 or channels != 1 or rate != 8000 or bits != 16:
                raise ValueError("WAV: need PCM 16-bit mono 8000 Hz, got format %d, %d ch, %d Hz, %d bit"
                                 % (fmt[0] | fmt[1] << 8, channels, rate, bits))
            fmt_ok = True
        elif head[0:4] == b"data":
            if not fmt_ok:
                raise ValueError("WAV: data chunk before fmt chunk")
            return size
        else:
            f.read(size + (size & 1))


def header(data_bytes):
    """44-byte header of a 16-bit mono 8 kHz PCM WAV file."""
    def le(v, n):
        return bytes((v >> (8 * i)) & 0xFF for i in range(n))
    return (b"RIFF" + le(36 + data_bytes, 4) + b"WAVEfmt " + le(16, 4) + le(1, 2) + le(1, 2)
            + le(8000, 4) + le(16000, 4) + le(2, 2) + le(16, 2) + b"data" + le(data_bytes, 4))
