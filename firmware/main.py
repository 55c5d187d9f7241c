"""Handset entry point: `micropython firmware/main.py CONFIG.json` on the unix port, main.py on a device.

MicroPython compiles this file from source at boot, on the heap: it stays short and the start-up
code lives in firmware/otaboot.py (which firmware to boot: an over-the-air update's slot or the
deployed one) and firmware/start.py, which arrive as .mpy (docs/handset.md, Memory).
"""
from firmware.otaboot import select

main = select()
del select
main()
