"""Stand-in for the ESP32's `network` module: one station interface that behaves as
ports/esp32/network_wlan.c (MicroPython v1.28) does, driven by the test.

After connect() the driver reconnects by itself after every disconnect; status() then reports
the reason (NO_AP_FOUND, WRONG_PASSWORD) or STAT_CONNECTING; calling connect() while it is
reconnecting raises OSError("Wifi Internal Error"), which is what the firmware must avoid.
By default the first connection gets an address after AUTO_IP status() calls.
"""
from machine import note

STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
_ASSOC_LEAVE = 8
AUTO_IP = 3
WLAN_OBJ = None


class WLAN:
    PM_NONE = 0
    PM_PERFORMANCE = 1

    def __init__(self, interface=STA_IF):
        global WLAN_OBJ
        WLAN_OBJ = self
        self.connected = False
        self.requested = False
        self.reason = 0
        self.polls = 0
        self.connects = 0

    def active(self, flag=None):
        return True

    def config(self, **kwargs):
        note("wlan_config", sorted(kwargs.items()))

    def connect(self, ssid=None, key=None):
        if self.requested and not self.connected and self.reason != _ASSOC_LEAVE:
            note("wifi_internal_error")
            raise OSError("Wifi Internal Error")
        self.connects += 1
        note("connect", ssid)
        self.requested = True
        self.reason = 0
        self.polls = 0

    def disconnect(self):
        self.requested = False
        self.connected = False
        self.reason = _ASSOC_LEAVE

    def isconnected(self):
        return self.connected

    def status(self):
        self.polls += 1
        if self.requested and not self.connected and self.reason == 0 and AUTO_IP and self.polls >= AUTO_IP:
            self.connected = True
        if self.connected:
            return STAT_GOT_IP
        if self.reason in (STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD):
            return self.reason
        if self.reason == _ASSOC_LEAVE:
            return STAT_IDLE
        if self.requested:
            return STAT_CONNECTING
        return STAT_IDLE if self.reason == 0 else self.reason

    # what the test does to the network
    def got_ip(self):
        self.connected = True
        self.reason = 0

    def lose(self, reason):
        """The AP went away (or refused): the driver keeps reconnecting by itself."""
        self.connected = False
        self.reason = reason
