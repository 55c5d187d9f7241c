"""Stand-in for the ESP32's `esp32` module: the OTA partitions, for firmware/ota.py under the unix port.

Models what MicroPython v1.28's ports/esp32/esp32_partition.c does with ESP-IDF's esp_ota_ops:
Partition(Partition.RUNNING) is the running app partition (ota_0 here), get_next_update() the other
(ota_1); blocks are 4096 bytes (ioctl 5) and a partition's size / 4096 of them (ioctl 4);
writeblocks(n, buf) without an offset erases the blocks first, then writes, and flash can only clear
bits (a write ANDs into what is there, so a write without an erase shows); set_boot() makes the
partition the next boot's; mark_app_valid_cancel_rollback() keeps the running one. BOOTED names the
partition the bootloader runs next (RUNNING after a reset, unless it rolled back), recorded in TRACE.
"""
TRACE = []
SIZE = 64 * 4096
FLASH = {"ota_0": bytearray(b"\xff" * SIZE), "ota_1": bytearray(b"\xff" * SIZE)}
STATE = {"running": "ota_0", "boot": "ota_0", "valid": False}


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, which):
        if which == Partition.RUNNING:
            self.label = STATE["running"]
        elif which == Partition.BOOT:
            self.label = STATE["boot"]
        else:
            self.label = which

    def info(self):
        return (0, 0x10 if self.label == "ota_0" else 0x11, 0x10000, SIZE, self.label, False)

    def get_next_update(self):
        return Partition("ota_1" if self.label == "ota_0" else "ota_0")

    def ioctl(self, op, arg):
        if op == 4:
            return SIZE // 4096
        if op == 5:
            return 4096
        return 0

    def writeblocks(self, block, buf, offset=None):
        flash = FLASH[self.label]
        at = block * 4096
        if offset is None:
            for i in range(at, at + len(buf)):
                flash[i] = 0xFF
            TRACE.append(("erase", self.label, block, len(buf) // 4096))
        else:
            at += offset
        for i in range(len(buf)):
            flash[at + i] &= buf[i]

    def readblocks(self, block, buf, offset=0):
        at = block * 4096 + offset
        buf[:] = FLASH[self.label][at:at + len(buf)]

    def set_boot(self):
        STATE["boot"] = self.label
        TRACE.append(("set_boot", self.label))

    @staticmethod
    def mark_app_valid_cancel_rollback():
        STATE["valid"] = True
        TRACE.append(("mark_app_valid_cancel_rollback", STATE["running"]))
