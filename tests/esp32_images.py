"""ESP32 images for tests, as ESP-IDF and MicroPython's makeimg.py lay them out (nothing here comes from
an ESP-IDF build: the application is made by esptool, the partition table from MicroPython v1.28.0's CSV
rows, the flash image at makeimg.py's offsets).
"""
import hashlib
import io
import struct
import tempfile

# MicroPython v1.28.0 ports/esp32 partition tables (name, type, subtype, offset, size)
TABLES = {
    "partitions-4MiB-ota.csv": (("nvs", "data", "nvs", 0x9000, 0x4000), ("otadata", "data", "ota", 0xd000, 0x2000),
                                ("phy_init", "data", "phy", 0xf000, 0x1000), ("ota_0", "app", "ota_0", 0x10000, 0x180000),
                                ("ota_1", "app", "ota_1", 0x190000, 0x180000)),
    "partitions-8MiBplus-ota.csv": (("nvs", "data", "nvs", 0x9000, 0x4000), ("otadata", "data", "ota", 0xd000, 0x2000),
                                    ("phy_init", "data", "phy", 0xf000, 0x1000),
                                    ("ota_0", "app", "ota_0", 0x10000, 0x270000),
                                    ("ota_1", "app", "ota_1", 0x280000, 0x270000)),
    "partitions-4MiBplus.csv": (("nvs", "data", "nvs", 0x9000, 0x6000), ("phy_init", "data", "phy", 0xf000, 0x1000),
                                ("factory", "app", "factory", 0x10000, 0x1F0000)),
}
SUBTYPES = {"nvs": 2, "ota": 0, "phy": 1, "factory": 0, **{"ota_%d" % i: 0x10 + i for i in range(16)}}
CHIP_IDS = {"esp32": 0, "esp32s3": 9}
FLASH_OFFSET = {"esp32": 0x1000, "esp32s3": 0}


def csv_text(name):
    return "# Name, Type, SubType, Offset, Size, Flags\n" + "".join(
        "%s, %s, %s, %#x, %#x,\n" % row for row in TABLES[name])


def partition_table_bin(name):
    """The binary table ESP-IDF's gen_esp32part.py makes of the CSV: 32-byte entries, then the MD5 entry."""
    out = b""
    for label, kind, subtype, offset, size in TABLES[name]:
        out += struct.pack("<2sBBII16sI", b"\xaa\x50", 0 if kind == "app" else 1, SUBTYPES[subtype], offset, size,
                           label.encode(), 0)
    out += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(out).digest()
    return out + b"\xff" * (0xC00 - len(out))


def app_image(chip="esp32", size=3000, seed=1):
    """A valid ESP-IDF application image (esptool: header, segments, checksum, SHA-256 appended)."""
    from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage
    img = (ESP32FirmwareImage if chip == "esp32" else ESP32S3FirmwareImage)()
    img.entrypoint = 0x40080000
    body = bytes((i * 7 + seed) & 0xFF for i in range(size))
    img.segments = [ELFSection(b".flash.rodata", 0x3F400020, b"MicroPython v1.28.0 upbx " + body[:size // 2], 0),
                    ELFSection(b".iram0.text", 0x40080000, body[size // 2:], 0)]
    with tempfile.NamedTemporaryFile() as f:
        img.save(f.name)
        return open(f.name, "rb").read()


def bootloader_image(chip="esp32"):
    return app_image(chip, 600, seed=3)


def flash_image(chip, table_name, app, bootloader=None):
    """What makeimg.py writes: bootloader at the chip's offset, the table at 0x8000, the application at the
    first app partition, 0xFF between."""
    base = FLASH_OFFSET[chip]
    out = io.BytesIO()
    out.write(bootloader or bootloader_image(chip))
    table = partition_table_bin(table_name).rstrip(b"\xff")
    first_app = next(row[3] for row in TABLES[table_name] if row[1] == "app")
    for at, data in ((0x8000, table), (first_app, app)):
        out.write(b"\xff" * (at - base - out.tell()))
        out.write(data)
    return out.getvalue()
