"""An ESP32 image into the next OTA partition (MicroPython's esp32.Partition), for an over-the-air
update of kind "image" (firmware/ota.py); loaded only for one.

The image is the application alone (what `upbx admin firmware add` takes out of the flash image
`upbx build --image esp32` wrote). ESP-IDF verifies it when it is made the boot partition (set_boot), and
its bootloader boots it once on trial: kept by mark_app_valid_cancel_rollback (firmware/ota.py), rolled
back at the next reset otherwise. A handset whose partition table has no OTA slots (a factory app)
refuses the update before it downloads anything.
"""


class ImageWriter:
    """An ESP32 image into the next OTA partition, a 4 KB flash block at a time (esp32.Partition)."""

    def __init__(self, size):
        try:
            import esp32
        except ImportError:
            raise ValueError("this handset boots no image (the unix port): roll out a bundle of files")
        try:
            self.part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        except OSError:   # ENOENT: no OTA app partition (MicroPython's default layout: one factory app)
            raise ValueError("this handset's partition table has no OTA slots: roll out a bundle of files, or "
                             "flash it once with an image built for \"ota\": true")
        block = self.part.ioctl(5, 0)
        if size > self.part.ioctl(4, 0) * block:
            raise ValueError("%d bytes do not fit the OTA partition" % size)
        self.buf = bytearray(block)
        self.fill = 0
        self.block = 0

    def write(self, data):
        i, n, buf = 0, len(data), self.buf
        while i < n:
            k = min(len(buf) - self.fill, n - i)
            buf[self.fill:self.fill + k] = data[i:i + k]
            self.fill += k
            i += k
            if self.fill == len(buf):
                self.part.writeblocks(self.block, buf)   # erases the block and writes it
                self.block += 1
                self.fill = 0

    def close(self):
        if self.fill:
            for i in range(self.fill, len(self.buf)):
                self.buf[i] = 0xFF
            self.part.writeblocks(self.block, self.buf)
            self.fill = 0

    def install(self):
        """Boot the new partition next; returns its label. OSError when ESP-IDF finds no valid application in
        it (esp_ota_set_boot_partition verifies the image: magic, chip, checksum, SHA-256)."""
        self.part.set_boot()
        return self.part.info()[4]

    def abort(self):
        self.fill = 0
