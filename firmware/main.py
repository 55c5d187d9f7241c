"""Handset entry point: `micropython firmware/main.py CONFIG.json` on the unix port, main.py on a device.

MicroPython compiles this file from source at boot, on the heap: it stays two lines and the
start-up code lives in firmware/start.py, which arrives as .mpy (docs/handset.md, Memory).
"""
from firmware.start import main

main()
