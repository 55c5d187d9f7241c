"""Stand-in for the ESP32's `esp32` module: the partitions and ESP-IDF's OTA data, for firmware/ota.py
under the unix port. Nothing here has run on an ESP32: it models the sources, read for this.

esp32.Partition as MicroPython v1.28.0's ports/esp32/esp32_partition.c has it:
- Partition(Partition.BOOT / Partition.RUNNING), any other int: ValueError; Partition("label"): an app
  partition of that label, else a data one, else OSError(ENOENT); an optional block size (4096).
- find(type=TYPE_APP, subtype=0xFF, label=None, block_size=4096): a list.
- info(): (type, subtype, address, size, label, encrypted).
- readblocks(n, buf[, offset]); writeblocks(n, buf) erases the range first (esp_partition_erase_range:
  4096-byte aligned, else OSError), writeblocks(n, buf, offset) does not; flash only clears bits (a write
  ANDs into what is there), and a range beyond the partition is an OSError.
- ioctl: 1-3 (init, deinit, sync) 0; 4 block count; 5 block size; 6 erase block; others None.
- get_next_update(): esp_ota_get_next_update_partition: the OTA app partition after this one, else the
  first; OSError(ENOENT) when the table has no OTA partition (a factory-app layout).
- set_boot(): esp_ota_set_boot_partition: the image in the partition is verified first (esp_image_verify:
  magic 0xE9, at most 16 segments inside the partition, the chip id, the XOR checksum, the SHA-256
  appended), else OSError(-0x1503, ESP_ERR_OTA_VALIDATE_FAILED); then the other otadata sector gets the
  next sequence number, in state NEW (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE); a factory app: otadata erased.
- mark_app_valid_cancel_rollback() (a classmethod): esp_ota_mark_app_valid_cancel_rollback: the active
  otadata entry becomes VALID; OSError(-261, ESP_ERR_NOT_FOUND) without an otadata partition, and
  OSError(1, ESP_FAIL) when no entry is active (a factory app, or the first boot after a USB flash:
  otadata blank).
(components/app_update/esp_ota_ops.c in ESP-IDF; check_esp_err in ports/esp32/mphalport.c makes
OSError(-code).)

Not in the real module: flash(layout) sets up a freshly flashed device, boot() is ESP-IDF's bootloader
at a reset with app roll-back: the active otadata entry (the valid one with the larger sequence number)
chooses the slot; NEW becomes PENDING_VERIFY and boots; PENDING_VERIFY (the app never marked itself
valid) becomes ABORTED and the other entry, else the first app partition, boots. TRACE records what
was done; OTADATA and FLASH are the flash.
"""
import hashlib

BLOCK = 4096
SLOT = 64 * BLOCK
TYPE_APP, TYPE_DATA = 0, 1
ENOENT = 2
ESP_FAIL = 1                    # OSError(-ESP_FAIL)
ESP_ERR_INVALID_SIZE = -0x104
ESP_ERR_NOT_FOUND = -0x105
ESP_ERR_OTA_VALIDATE_FAILED = -0x1503
CHIP_ID = 0                     # esp_image_header_t chip_id of the chip this is (ESP32)
BLANK = 0xFFFFFFFF
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED = 0, 1, 2, 3, 4
# (label, type, subtype, size): MicroPython's partitions-4MiB-ota.csv and partitions-4MiBplus.csv, slots smaller
LAYOUTS = {"ota": (("nvs", 1, 2, 0x4000), ("otadata", 1, 0, 0x2000), ("phy_init", 1, 1, 0x1000),
                   ("ota_0", 0, 0x10, SLOT), ("ota_1", 0, 0x11, SLOT)),
           "factory": (("nvs", 1, 2, 0x6000), ("phy_init", 1, 1, 0x1000), ("factory", 0, 0, SLOT))}
TABLE = []       # (label, type, subtype, address, size) of the layout flashed
FLASH = {}       # label: bytearray
OTADATA = []     # two entries {"seq", "state"}: the two sectors of otadata ([] without an otadata partition)
STATE = {"running": None}
TRACE = []


def flash(layout="ota"):
    """A device just written by `upbx flash` with this layout: otadata blank, the first app partition runs."""
    del TABLE[:]
    del TRACE[:]
    address = 0x9000
    for label, kind, subtype, size in LAYOUTS[layout]:
        TABLE.append((label, kind, subtype, address, size))
        FLASH[label] = bytearray(b"\xff" * size)
        address += size
    OTADATA[:] = [{"seq": BLANK, "state": BLANK}, {"seq": BLANK, "state": BLANK}] if _otadata() else []
    STATE["running"] = _default_app()


def _otadata():
    for entry in TABLE:
        if entry[1] == TYPE_DATA and entry[2] == 0:
            return entry
    return None


def _ota_apps():
    return sorted((e for e in TABLE if e[1] == TYPE_APP and 0x10 <= e[2] <= 0x1F), key=lambda e: e[2])


def _default_app():
    """The bootloader's choice without an active otadata entry: factory, else the first OTA partition."""
    for entry in TABLE:
        if entry[1] == TYPE_APP and entry[2] == 0:
            return entry[0]
    apps = _ota_apps()
    return apps[0][0] if apps else None


def _valid(entry):
    return entry["seq"] != BLANK and entry["state"] not in (INVALID, ABORTED)


def _active():
    """bootloader_common_get_active_otadata: the valid entry with the larger sequence number, or -1."""
    best = -1
    for i in (0, 1):
        if i < len(OTADATA) and _valid(OTADATA[i]) and (best == -1 or OTADATA[i]["seq"] > OTADATA[best]["seq"]):
            best = i
    return best


def _slot_of(entry):
    apps = _ota_apps()
    return apps[(entry["seq"] - 1) % len(apps)][0]


def boot():
    """ESP-IDF's bootloader at a reset (app roll-back enabled): which partition runs now."""
    while True:
        active = _active()
        if active == -1 or not _ota_apps():
            STATE["running"] = _default_app()
            break
        entry = OTADATA[active]
        if entry["state"] == PENDING_VERIFY:   # booted once and never marked valid: roll back
            entry["state"] = ABORTED
            TRACE.append(("aborted", _slot_of(entry)))
            continue
        if entry["state"] == NEW:
            entry["state"] = PENDING_VERIFY
        STATE["running"] = _slot_of(entry)
        break
    TRACE.append(("boot", STATE["running"]))
    return STATE["running"]


def _find(label):
    for kind in (TYPE_APP, TYPE_DATA):
        for entry in TABLE:
            if entry[0] == label and entry[1] == kind:
                return entry
    return None


def _check_image(data, size):
    """esp_image_verify, as far as the handset's update can get it wrong: True when the partition holds an app."""
    if data[0] != 0xE9 or data[1] > 16 or (data[12] | data[13] << 8) != CHIP_ID:
        return False
    at, checksum = 24, 0xEF
    for _ in range(data[1]):
        if at + 8 > size:
            return False
        length = int.from_bytes(data[at + 4:at + 8], "little")
        at += 8
        if at + length > size:
            return False
        for b in data[at:at + length]:
            checksum ^= b
        at += length
    at += 15 - at % 16   # padding: the checksum is the last byte of a 16-byte block
    if at + 1 > size or data[at] != checksum:
        return False
    at += 1
    if data[23] == 1:   # hash_appended
        return at + 32 <= size and hashlib.sha256(data[:at]).digest() == bytes(data[at:at + 32])
    return True


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA

    def __init__(self, which, block_size=BLOCK):
        if isinstance(which, int):
            if which == Partition.RUNNING:
                label = STATE["running"]
            elif which == Partition.BOOT:
                if _otadata() is None:
                    raise OSError(ENOENT)
                active = _active()
                label = _slot_of(OTADATA[active]) if active != -1 and _ota_apps() else _default_app()
            else:
                raise ValueError()
            which = label
        entry = _find(which)
        if entry is None:
            raise OSError(ENOENT)
        self.entry = entry
        self.label = entry[0]
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=BLOCK):
        return [Partition(e[0], block_size) for e in TABLE
                if e[1] == type and subtype in (0xFF, e[2]) and label in (None, e[0])]

    def info(self):
        label, kind, subtype, address, size = self.entry
        return (kind, subtype, address, size, label, False)

    def _range(self, at, n):
        if at < 0 or at + n > self.entry[4]:
            raise OSError(ESP_ERR_INVALID_SIZE)

    def readblocks(self, block, buf, offset=0):
        at = block * self.block_size + offset
        self._range(at, len(buf))
        buf[:] = FLASH[self.label][at:at + len(buf)]

    def _erase(self, at, n):
        if at % BLOCK or n % BLOCK:
            raise OSError(ESP_ERR_INVALID_SIZE)
        self._range(at, n)
        flash = FLASH[self.label]
        for i in range(at, at + n):
            flash[i] = 0xFF
        TRACE.append(("erase", self.label, at // BLOCK, n // BLOCK))

    def writeblocks(self, block, buf, offset=None):
        at = block * self.block_size
        if offset is None:
            self._erase(at, len(buf))
        else:
            at += offset
        self._range(at, len(buf))
        flash = FLASH[self.label]
        for i in range(len(buf)):
            flash[at + i] &= buf[i]

    def ioctl(self, op, arg):
        if op in (1, 2, 3):
            return 0
        if op == 4:
            return self.entry[4] // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            if self.block_size != BLOCK:
                return -22
            self._erase(arg * BLOCK, BLOCK)
            return 0
        return None

    def get_next_update(self):
        apps = _ota_apps()
        if not apps:
            raise OSError(ENOENT)
        labels = [e[0] for e in apps]
        if self.label in labels and labels.index(self.label) + 1 < len(labels):
            return Partition(labels[labels.index(self.label) + 1])
        return Partition(labels[0])

    def set_boot(self):
        label, kind, subtype, _address, size = self.entry
        if kind != TYPE_APP:
            raise OSError(-0x102)   # ESP_ERR_INVALID_ARG
        if not _check_image(FLASH[label], size):
            raise OSError(ESP_ERR_OTA_VALIDATE_FAILED)
        if _otadata() is None:
            raise OSError(ESP_ERR_NOT_FOUND)
        if subtype == 0:   # factory: otadata erased
            OTADATA[:] = [{"seq": BLANK, "state": BLANK}, {"seq": BLANK, "state": BLANK}]
        else:
            n = len(_ota_apps())
            sub = subtype & 0x0F
            active = _active()
            if active == -1:
                OTADATA[0] = {"seq": sub + 1, "state": NEW}
            else:
                i = 0
                while OTADATA[active]["seq"] > (sub + 1) % n + i * n:
                    i += 1
                OTADATA[1 - active] = {"seq": (sub + 1) % n + i * n, "state": NEW}
        TRACE.append(("set_boot", label))

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        if _otadata() is None:
            raise OSError(ESP_ERR_NOT_FOUND)
        active = _active()
        if active == -1 or not _ota_apps():
            raise OSError(ESP_FAIL)   # "Running firmware is factory"
        OTADATA[active]["state"] = VALID
        TRACE.append(("mark_app_valid_cancel_rollback", _slot_of(OTADATA[active])))


flash()
