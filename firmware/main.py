"""Handset entry point: `micropython firmware/main.py CONFIG.json` on the unix port, main.py on a device."""
import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio


def load_config(path):
    with open(path) as f:
        return json.load(f)


def make_hal(config):
    if sys.platform == "linux":
        from firmware.hal import unix
        return unix.Hal(source=config.get("audio_in") or None, sink=config.get("audio_out") or None,
                        name=config.get("extension", "phone"))
    from firmware.hal import esp32
    with open("board.json") as f:
        board = json.load(f)
    return esp32.Hal(board, config)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].endswith(".json") else "upbx_config.json"
    config = load_config(path)
    from firmware.app import App
    hal = make_hal(config)
    asyncio.run(App(config, hal).run())


main()
