"""The handset application: one asyncio task moving bytes, time and audio.

The protocol is common.phone (sans-IO); audio is firmware.audio.pipeline; the
HAL (unix or esp32) owns the devices. Runs unchanged on an ESP32 and, with the
unix HAL, as a virtual handset under the MicroPython unix port (`upbx phone`).
"""
import json
import os
import select
import socket
import struct

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from common import wire
from common.phone import CONNECTED, Phone, RINGING
from firmware.audio.pipeline import AudioPipeline

FRAME_MS = 20
TONES = {"busy": "busy", "unreachable": "reorder", "network busy": "reorder", "not permitted": "reorder",
         "unknown extension": "reorder", "no answer": "reorder"}


class App:
    def __init__(self, config, hal):
        self.config = config
        self.hal = hal
        self.script = config.get("script", {})
        host, port = config["host"], int(config["port"])
        self.host_addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(socket.getaddrinfo(config.get("bind", "0.0.0.0"), int(config.get("local_port", 0)))[0][-1])
        self.sock.setblocking(False)
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.phone = Phone(config["extension"], bytes.fromhex(config["secret"]), os.urandom,
                           keepalive_ms=int(config.get("keepalive_ms", 20000)))
        self.pipeline = AudioPipeline(config.get("codec", "ulaw"), config.get("plc", True), FRAME_MS)
        self.pcm = bytearray(320)
        self.digits = ""
        self.call_ts = 0
        self.connected_at = None
        self.running = True
        self.record = open(self.script["record_g711"], "wb") if self.script.get("record_g711") else None
        self.summary = {"extension": config["extension"], "registered": False, "frames_sent": 0,
                        "frames_received": 0, "frames_rejected": 0, "calls": [], "sysinfo_version": None,
                        "dtmf_received": ""}
        self.current = None
        self.started = None
        self._peer_key = self._peer_addr = None

    def log(self, level, msg):
        self.hal.log(level, "phone", msg)

    # actions

    def dial(self, number, now):
        if self.phone.dial(number, now):
            self.current = {"to": number, "from": self.config["extension"], "dialed_ms": now, "setup_ms": None,
                            "path": None, "cause": None, "frames_sent": 0, "frames_received": 0}
            self.log("I", "dialing %s" % number)
            self.hal.display("dialing", number)
        else:
            self.log("W", "cannot dial %s now (state %s)" % (number, self.phone.state))

    def command(self, cmd, now):
        if cmd.startswith("!call "):
            self.dial(cmd[6:].strip(), now)
        elif cmd == "!hangup":
            self.phone.hangup(now)
        elif cmd == "!answer":
            self.phone.answer(now)
        elif cmd.startswith("!dtmf "):
            digit = cmd[6:].strip()[:1]
            if self.phone.dtmf(digit, now):
                self.pipeline.tone.dtmf(digit)
        elif cmd == "!state":
            self.log("I", "state " + json.dumps({"state": self.phone.state, "registered": self.phone.registered,
                                                  "extension": self.config["extension"],
                                                  "sysinfo_version": self.phone.sysinfo_version}))
        elif cmd == "!reset" or cmd == "!quit":
            self.running = False
        elif len(cmd) == 1:
            self.key(cmd, now)

    def key(self, key, now):
        if self.phone.state == RINGING:
            self.phone.answer(now)
        elif self.phone.state == CONNECTED and key in "0123456789*#":
            self.command("!dtmf " + key, now)
        elif key == "#":
            if self.digits:
                self.dial(self.digits, now)
            self.digits = ""
        elif key == "*":
            self.digits = ""
            if self.phone.call is not None:
                self.phone.hangup(now)
        else:
            self.digits += key

    # events from the protocol

    def events(self, now):
        for event in self.phone.events:
            name = event[0]
            if name == "registered":
                self.summary["registered"] = True
                self.log("I", "registered as %s" % self.config["extension"])
                self.hal.display("idle", None)
            elif name == "unregistered":
                self.log("W", "registration lost: %s" % event[1])
            elif name == "incoming":
                self.log("I", "incoming call from %s %s" % (event[1], event[2]))
                self.hal.display("ringing", event[1])
                self.current = {"from": event[1], "to": self.config["extension"], "dialed_ms": now,
                                "setup_ms": None, "path": None, "cause": None, "frames_sent": 0,
                                "frames_received": 0}
                self.pipeline.tone.start("ring") if "ring" in dir(self.pipeline.tone) else None
                if self.script.get("answer"):
                    self.answer_at = now + int(self.script.get("answer_after_ms", 300))
            elif name == "ringback":
                self.pipeline.tone.start("ringback")
                self.hal.display("ringback", self.current and self.current["to"])
            elif name == "connected":
                self.pipeline.reset()
                self.hal.set_power_save(False)
                self.connected_at = now
                self.call_ts = 0
                if self.current is not None:
                    self.current["setup_ms"] = now - self.current["dialed_ms"]
                    self.current["path"] = event[1]
                self.log("I", "connected (%s)" % event[1])
                self.hal.display("connected", self.current and self.current.get("from"))
                duration = self.script.get("duration_ms")
                if duration and self.current and self.current["from"] == self.config["extension"]:
                    self.hangup_at = now + int(duration)
            elif name == "ended":
                cause = wire.CAUSE_TEXT.get(event[1], str(event[1]))
                self.log("I", "call ended: %s" % cause)
                self.hal.set_power_save(True)
                self.pipeline.reset()
                tone = TONES.get(cause)
                if tone:
                    self.pipeline.tone.start(tone)
                self.hal.display("ended: " + cause, None)
                if self.current is not None:
                    self.current["cause"] = cause
                    if self.current["path"] is None and self.phone.call is None:
                        pass
                    self.summary["calls"].append(self.current)
                    self.current = None
                self.connected_at = None
                if self.script.get("exit_after_call"):
                    self.exit_at = now + 300
            elif name == "dtmf":
                self.summary["dtmf_received"] += event[1]
                self.log("I", "dtmf %s" % event[1])
            elif name == "sysinfo":
                self.summary["sysinfo_version"] = event[1]
                self.log("I", "system information version %d (%d bytes)" % (event[1], len(event[2])))
                self.save_sysinfo(event[1], event[2])
        self.phone.events = []

    def save_sysinfo(self, version, data):
        path = self.config.get("sysinfo_file", "sysinfo.json")
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            self.log("W", "cannot keep system information: %s" % exc)

    # I/O

    def receive(self, now):
        for _ in range(32):
            if not self.poller.poll(0):
                return
            try:
                data, addr = self.sock.recvfrom(1600)
            except OSError:
                return
            try:
                media = self.phone.receive(bytearray(data), now)
            except wire.DecodeError:
                self.summary["frames_rejected"] += 1
                continue
            if media is not None:
                ts, payload = media
                self.pipeline.receive(ts & 0xFFFF, payload, now)
                self.summary["frames_received"] += 1
                if self.current is not None:
                    self.current["frames_received"] += 1
                if self.record is not None:
                    self.record.write(struct.pack(">I", ts & 0xFFFFFFFF))
                    self.record.write(payload)

    def flush(self, now):
        for datagram in self.phone.datagrams_to_send(now):
            self.sock.sendto(datagram, self.host_addr)

    def audio_tick(self, now):
        if self.phone.state == CONNECTED:
            self.hal.read_frame(self.pcm)
            self.pipeline.encode(self.pcm)
            frame, addr = self.phone.seal_media(self.call_ts, self.pipeline.tx_payload)
            self.call_ts += FRAME_MS
            if frame is not None:
                if addr is not None:
                    if self._peer_key != addr:  # resolve the LAN peer's address once per call
                        self._peer_key, self._peer_addr = addr, socket.getaddrinfo(addr[0], addr[1])[0][-1]
                    addr = self._peer_addr
                self.sock.sendto(frame, addr if addr is not None else self.host_addr)
                self.summary["frames_sent"] += 1
                if self.current is not None:
                    self.current["frames_sent"] += 1
            self.hal.write_frame(self.pipeline.playout(now))

    async def run(self):
        hal = self.hal
        now = hal.ticks_ms()
        self.started = now
        self.answer_at = self.hangup_at = self.exit_at = None
        script = self.script
        call_at = now + int(script.get("call_after_ms", 0)) if script.get("call") else None
        stop_at = now + int(script["exit_after_ms"]) if script.get("exit_after_ms") else None
        self.phone.start(now)
        next_frame = now
        while self.running:
            now = hal.ticks_ms()
            self.receive(now)
            timer = self.phone.next_timer()
            if timer is not None and now >= timer:
                self.phone.handle_timer(now)
            self.events(now)
            if call_at is not None and self.phone.registered and now >= call_at:
                call_at = None
                self.dial(script["call"], now)
            if self.answer_at is not None and now >= self.answer_at:
                self.answer_at = None
                self.phone.answer(now)
            if self.hangup_at is not None and now >= self.hangup_at:
                self.hangup_at = None
                self.phone.hangup(now)
            if script.get("dtmf") and self.connected_at is not None and now - self.connected_at > 500:
                for digit in script.pop("dtmf"):
                    self.command("!dtmf " + digit, now)
            key = hal.poll_keys()
            while key is not None:
                self.command(key, now)
                key = hal.poll_keys()
            self.events(now)
            while now - next_frame >= 0:
                self.audio_tick(now)
                next_frame += FRAME_MS
                if now - next_frame > 200:
                    next_frame = now  # fell far behind: skip rather than burst
            self.flush(now)
            if (self.exit_at is not None and now >= self.exit_at) or (stop_at is not None and now >= stop_at):
                break
            wait = next_frame - hal.ticks_ms()
            await asyncio.sleep_ms(max(1, min(wait, 10)))
        self.finish()

    def finish(self):
        now = self.hal.ticks_ms()
        self.phone.stop(now)
        self.events(now)
        self.flush(now)
        if self.current is not None:
            self.current["cause"] = "in progress"
            self.summary["calls"].append(self.current)
            self.current = None
        self.summary["frames_rejected"] += self.phone.dropped
        if self.record is not None:
            self.record.close()
        if self.script.get("summary"):
            with open(self.script["summary"], "w") as f:
                f.write(json.dumps(self.summary))
        self.log("I", "summary " + json.dumps(self.summary))
        self.hal.close()
