"""`upbx bench sip`: what the RTP side of one SIP call costs a host per 20 ms frame (docs/sip.md).

Times SipMediaLeg (host/sip/media.py) as the host runs it: an RTP packet from the phone parsed,
checked, re-blocked and (PCMA) transcoded to mu-law, and a upbx frame transcoded and sent as RTP.
The switch's own work on the frame (opening and sealing upbx media) is not in these figures: it is
what `upbx bench relay` measures. Best of 5 runs, in-process, CPython.
"""
import struct
import time

from upbx.host.sip.media import SipMedia, SipMediaLeg


class _Switch:
    def __init__(self):
        self.frames = 0

    def forward(self, leg, ts, payload, now):
        self.frames += 1


class _Core:
    """The two things SipMediaLeg asks of a host core on the audio path: the time and the switch."""

    def __init__(self):
        self.now = 0
        self.switch = _Switch()


def _per_frame_us(codec, frames):
    core = _Core()
    leg = SipMediaLeg(core, None, SipMedia(codec, ("10.1.0.11", 10140), 101, seed=1), send=lambda d, a: None)
    pt = 0 if codec == "PCMU" else 8
    payload = bytes(range(160))
    packets = [struct.pack("!BBHII", 0x80, pt, i & 0xFFFF, 160 * i, 7) + payload for i in range(frames)]
    best_in = best_out = None
    for run in range(5):
        base = run * frames
        start = time.perf_counter()
        for i, p in enumerate(packets):
            leg.rtp_in(p[:2] + struct.pack("!HI", (base + i) & 0xFFFF, 160 * (base + i)) + p[8:], ("198.18.1.1", 4000), 0)
        mid = time.perf_counter()
        for i in range(frames):
            leg.media(20 * (base + i), payload)
        end = time.perf_counter()
        t_in, t_out = (mid - start) / frames * 1e6, (end - mid) / frames * 1e6
        best_in = t_in if best_in is None else min(best_in, t_in)
        best_out = t_out if best_out is None else min(best_out, t_out)
    assert core.switch.frames == 5 * frames
    return round(best_in, 2), round(best_out, 2)


def bench_sip(quick=False):
    frames = 500 if quick else 5000
    out = {}
    for codec in ("PCMU", "PCMA"):
        t_in, t_out = _per_frame_us(codec, frames)
        key = codec.lower()
        out["us_per_frame_in_" + key] = t_in
        out["us_per_frame_out_" + key] = t_out
        # a call is one frame each way every 20 ms: the RTP side's bound on calls per core
        out["rtp_calls_per_core_" + key] = int(20000 / (t_in + t_out))
    out["frames"] = frames
    return out


def table_sip(r):
    lines = ["sip: the RTP side of a SIP call, per 20 ms frame (best of 5, %d frames):" % r["frames"]]
    for key in ("pcmu", "pcma"):
        lines.append("  %s: in %.2f us, out %.2f us -> at most %d calls per core for this part"
                     % (key.upper(), r["us_per_frame_in_" + key], r["us_per_frame_out_" + key],
                        r["rtp_calls_per_core_" + key]))
    return "\n".join(lines)
