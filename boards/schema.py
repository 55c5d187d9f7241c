"""Check a handset board file (boards/*.json) against its chip (boards/chips.json).

Runs on CPython at the desk (tests, `upbx deploy`); the handset itself only reads
the JSON. Every problem names the file, the key and what is wrong, e.g.
`boards/x.json: keypad.cols[2]: GPIO35 is input only and has no internal pull-up`.

    python boards/schema.py [FILE ...]     # no argument: every board in boards/
"""
import json
import pathlib
import sys

BOARDS_DIR = pathlib.Path(__file__).resolve().parent
CHIPS_FILE = BOARDS_DIR / "chips.json"

TOP_KEYS = {
    # key: required
    "name": True, "chip": True, "flash_offset": True, "full_duplex": True,
    "i2s_mic": True, "i2s_speaker": True, "mip_packages": True, "sources": True, "notes": True,
    "micropython_image": True,
    "description": False, "keypad": False, "keys": False, "ptt_key": False, "display": False,
    "codec": False, "pa_enable": False, "strapping_pins_used": False, "wiring": False,
}
I2S_KEYS = {"id": True, "sck": True, "ws": True, "sd": True, "bits": True, "format": True,
            "rate": True, "ibuf": False}
I2C_KEYS = {"id": True, "scl": True, "sda": True, "freq": False}
IMAGE_KEYS = {"board": True, "variant": False, "needs_frozen": True, "flash_mib": False, "ota": False}
FLASH_MIB = (2, 4, 8, 16, 32)   # the flash sizes ESP-IDF's esptoolpy offers that MicroPython boards use
OTA_MIN_FLASH_MIB = 4          # MicroPython's smallest OTA layout: partitions-4MiB-ota.csv
DISPLAY_TYPES = ("ssd1306",)
CODEC_TYPES = ("es8388",)

# How a pin is driven, per role. "out" covers anything the ESP32 drives, including
# open-drain I2C lines; "pullup" is an input that needs the internal pull-up.
OUT, IN, PULLUP = "out", "in", "pullup"


class BoardError(ValueError):
    """A board file is invalid; `problems` lists every problem found."""

    def __init__(self, problems):
        ValueError.__init__(self, "\n".join(problems))
        self.problems = problems


def load_chips(path=CHIPS_FILE):
    with open(path) as f:
        return json.load(f)


def board_path(name):
    """Path of the board file for a board name (or a path given directly)."""
    p = pathlib.Path(name)
    if p.suffix == ".json" and p.exists():
        return p
    return BOARDS_DIR / (name + ".json")


def board_names():
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json") if p.name != CHIPS_FILE.name)


def load_board(name_or_path, chips=None):
    """Read and check a board file; returns the dict or raises BoardError."""
    path = board_path(name_or_path)
    if not path.exists():
        raise BoardError(["%s: no such board file (boards: %s)" % (path, ", ".join(board_names()))])
    problems = check_board_file(path, chips)
    if problems:
        raise BoardError(problems)
    with open(path) as f:
        return json.load(f)


def check_board_file(path, chips=None):
    """Every problem in one board file, as 'FILE: key: problem' strings."""
    path = pathlib.Path(path)
    try:
        with open(path) as f:
            board = json.load(f)
    except ValueError as exc:
        return ["%s: (file): not valid JSON: %s" % (path, exc)]
    return ["%s: %s: %s" % (path, key, msg) for key, msg in check_board(board, chips or load_chips(), path.stem)]


def check_board(board, chips, stem=None):
    """Every problem in a board dict, as (key, message) pairs."""
    out = []
    if not isinstance(board, dict):
        return [("(file)", "top level must be an object")]
    _check_keys(board, TOP_KEYS, "", out)
    structural = ("name", "chip", "flash_offset", "full_duplex", "i2s_mic", "i2s_speaker")
    if any(k in structural for k, _ in out):
        return out
    chip_name = board["chip"]
    if chip_name not in chips:
        return out + [("chip", "unknown chip %r (known: %s)" % (chip_name, ", ".join(sorted(chips))))]
    chip = chips[chip_name]
    _check_types(board, chip, stem, out)
    if out:
        return out
    _check_pins(board, chip, chip_name, out)
    _check_audio_buses(board, out)
    return out


def _check_keys(obj, spec, prefix, out):
    for key, required in spec.items():
        if required and key not in obj:
            out.append((prefix + key, "missing"))
    for key in obj:
        if key not in spec:
            out.append((prefix + key, "unknown key (allowed: %s)" % ", ".join(sorted(spec))))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_types(board, chip, stem, out):
    if not isinstance(board["name"], str) or (stem and board["name"] != stem):
        out.append(("name", "must be the file name without .json (%r)" % stem))
    if board["flash_offset"] != chip["flash_offset"]:
        out.append(("flash_offset", "%r, but MicroPython images for %s go at %#x"
                    % (board["flash_offset"], board["chip"], chip["flash_offset"])))
    if not isinstance(board["full_duplex"], bool):
        out.append(("full_duplex", "must be true or false"))
    for bus in ("i2s_mic", "i2s_speaker"):
        i2s = board[bus]
        if not isinstance(i2s, dict):
            out.append((bus, "must be an object"))
            continue
        _check_keys(i2s, I2S_KEYS, bus + ".", out)
        if i2s.get("id") not in chip["i2s_ids"]:
            out.append((bus + ".id", "%r is not an I2S bus of %s %s" % (i2s.get("id"), board["chip"], chip["i2s_ids"])))
        if i2s.get("bits") not in (16, 32):
            out.append((bus + ".bits", "must be 16 or 32"))
        if i2s.get("format") not in ("mono", "stereo"):
            out.append((bus + ".format", "must be \"mono\" or \"stereo\""))
        if not _is_int(i2s.get("rate")):
            out.append((bus + ".rate", "must be an integer (Hz)"))
    if "micropython_image" in board:  # missing: reported with the other keys
        _check_image(board["micropython_image"], board["chip"], chip, out)
    keypad = board.get("keypad")
    if keypad is not None:
        _check_keys(keypad, {"rows": True, "cols": True, "keys": True}, "keypad.", out)
        rows, cols, keys = keypad.get("rows", []), keypad.get("cols", []), keypad.get("keys", [])
        if not (isinstance(keys, list) and len(keys) == len(rows)
                and all(isinstance(r, list) and len(r) == len(cols) for r in keys)):
            out.append(("keypad.keys", "must be %d rows of %d key labels (one per row x column)" % (len(rows), len(cols))))
    keys = board.get("keys", [])
    names = []
    for i, key in enumerate(keys):
        where = "keys[%d]" % i
        if not isinstance(key, dict) or "name" not in key or not _is_int(key.get("pin")):
            out.append((where, "must be an object with a name and an integer pin"))
            continue
        if key.get("kind") not in ("button", "touch"):
            out.append((where + ".kind", "must be \"button\" or \"touch\""))
        if key.get("kind") == "button" and key.get("pull") not in ("up", "none"):
            out.append((where + ".pull", "a button needs pull \"up\" (internal) or \"none\" (board resistor)"))
        names.append(key["name"])
    if keypad is None and not keys:
        out.append(("keypad", "a handset needs a keypad or at least one key"))
    if not board["full_duplex"]:
        if board.get("ptt_key") not in names:
            out.append(("ptt_key", "a half-duplex board needs a push-to-talk key naming one of keys %s" % names))
    elif "ptt_key" in board and board["ptt_key"] not in names:
        out.append(("ptt_key", "names no key in keys %s" % names))
    display = board.get("display")
    if display is not None:
        _check_keys(display, {"type": True, "i2c": True, "width": True, "height": True, "address": False}, "display.", out)
        if display.get("type") not in DISPLAY_TYPES:
            out.append(("display.type", "must be one of %s" % (DISPLAY_TYPES,)))
        _check_i2c(display.get("i2c"), "display.i2c", chip, out)
    codec = board.get("codec")
    if codec is not None:
        _check_keys(codec, {"type": True, "i2c": True, "address": True, "mclk": False, "mclk_available": False}, "codec.", out)
        if codec.get("type") not in CODEC_TYPES:
            out.append(("codec.type", "must be one of %s" % (CODEC_TYPES,)))
        if not (_is_int(codec.get("address")) and 0x08 <= codec["address"] <= 0x77):
            out.append(("codec.address", "must be a 7-bit I2C address (0x08-0x77)"))
        _check_i2c(codec.get("i2c"), "codec.i2c", chip, out)
    pa = board.get("pa_enable")
    if pa is not None and not (isinstance(pa, dict) and _is_int(pa.get("pin")) and isinstance(pa.get("active_high"), bool)):
        out.append(("pa_enable", "must be {\"pin\": N, \"active_high\": true|false}"))
    packages = board.get("mip_packages", [])
    if not (isinstance(packages, list) and all(isinstance(p, str) and p for p in packages)):
        out.append(("mip_packages", "must be a list of micropython-lib package names"))
    elif display is not None and display.get("type") not in packages:
        out.append(("mip_packages", "the display needs the %r package" % display.get("type")))
    sources = board.get("sources", ["(missing: reported above)"])
    if not (isinstance(sources, list) and sources and all(isinstance(s, str) and s for s in sources)):
        out.append(("sources", "must cite at least one document (list of strings)"))
    if not (isinstance(board.get("notes", "-"), str) and board.get("notes", "-").strip()):
        out.append(("notes", "must say what was and was not verified"))
    used = board.get("strapping_pins_used", {})
    if not isinstance(used, dict) or not all(isinstance(v, str) and v.strip() for v in used.values()):
        out.append(("strapping_pins_used", "must map each strapping pin used (as a string) to a justification"))


def _is_name(v):
    return isinstance(v, str) and v != "" and all(c.isupper() or c.isdigit() or c == "_" for c in v)


def _check_image(image, chip_name, chip, out):
    """micropython_image: the MicroPython board (and variant) `upbx build --image esp32` builds, and
    whether the handset needs its modules frozen in (no PSRAM: a .mpy deployment leaves too little heap)."""
    if not isinstance(image, dict):
        out.append(("micropython_image", "must be {\"board\": NAME, \"variant\": NAME (optional), "
                                         "\"needs_frozen\": true|false, \"flash_mib\": N, \"ota\": true|false}"))
        return
    _check_keys(image, IMAGE_KEYS, "micropython_image.", out)
    if not _is_name(image.get("board")):
        out.append(("micropython_image.board", "must be a MicroPython board name (ports/esp32/boards), e.g. %r"
                    % chip["micropython_board"]))
        return
    if "variant" in image and not _is_name(image["variant"]):
        out.append(("micropython_image.variant", "must be a variant name (mpconfigvariant_NAME.cmake), e.g. \"SPIRAM\""))
    if not isinstance(image.get("needs_frozen"), bool):
        out.append(("micropython_image.needs_frozen", "must be true or false"))
    if "flash_mib" in image and image["flash_mib"] not in FLASH_MIB:
        out.append(("micropython_image.flash_mib", "must be the module's flash size in MiB, one of %s"
                    % ", ".join(map(str, FLASH_MIB))))
    if "ota" in image and not isinstance(image["ota"], bool):
        out.append(("micropython_image.ota", "must be true or false"))
    elif image.get("ota"):
        if "flash_mib" not in image:
            out.append(("micropython_image.flash_mib", "missing: \"ota\": true chooses MicroPython's OTA partition "
                        "table by the flash size"))
        elif image["flash_mib"] in FLASH_MIB and image["flash_mib"] < OTA_MIN_FLASH_MIB:
            out.append(("micropython_image.ota", "needs at least %d MiB of flash (two application slots); this "
                        "board has %d" % (OTA_MIN_FLASH_MIB, image["flash_mib"])))
    if image.get("variant") == "OTA":
        out.append(("micropython_image.variant", "OTA: say \"ota\": true instead (with flash_mib): `upbx build "
                    "--image esp32` chooses MicroPython's OTA variant or layout from them"))
        return
    generic = image["board"] == chip["micropython_board"]
    if image["board"].startswith("ESP32_GENERIC") and not generic:
        out.append(("micropython_image.board", "%s is not the generic image for %s (%s is)"
                    % (image["board"], chip_name, chip["micropython_board"])))
    elif generic and image.get("variant") not in [None] + chip["micropython_variants"]:
        out.append(("micropython_image.variant", "%s has no variant %r (MicroPython v1.28.0 has %s)"
                    % (image["board"], image.get("variant"), ", ".join(chip["micropython_variants"]))))


def _check_i2c(i2c, where, chip, out):
    if not isinstance(i2c, dict):
        out.append((where, "must be an object {id, scl, sda}"))
        return
    _check_keys(i2c, I2C_KEYS, where + ".", out)
    if i2c.get("id") not in chip["i2c_ids"]:
        out.append((where + ".id", "%r is not an I2C bus id %s" % (i2c.get("id"), chip["i2c_ids"])))


def board_pins(board):
    """Every pin the board file assigns: (key, pin, how it is driven)."""
    pins = []
    for bus, sd_dir in (("i2s_mic", IN), ("i2s_speaker", OUT)):
        i2s = board[bus]
        pins += [(bus + ".sck", i2s["sck"], OUT), (bus + ".ws", i2s["ws"], OUT), (bus + ".sd", i2s["sd"], sd_dir)]
    keypad = board.get("keypad")
    if keypad:
        pins += [("keypad.rows[%d]" % i, p, OUT) for i, p in enumerate(keypad["rows"])]
        pins += [("keypad.cols[%d]" % i, p, PULLUP) for i, p in enumerate(keypad["cols"])]
    for i, key in enumerate(board.get("keys", [])):
        pins.append(("keys[%d].pin" % i, key["pin"], PULLUP if key.get("pull") == "up" else IN))
    for part in ("display", "codec"):
        if board.get(part):
            i2c = board[part]["i2c"]
            pins += [(part + ".i2c.scl", i2c["scl"], OUT), (part + ".i2c.sda", i2c["sda"], OUT)]
    codec = board.get("codec")
    if codec and "mclk" in codec:
        pins.append(("codec.mclk", codec["mclk"], OUT))
    if board.get("pa_enable"):
        pins.append(("pa_enable.pin", board["pa_enable"]["pin"], OUT))
    return pins


def _may_share(key_a, key_b, board):
    """Pins two roles may legitimately share: one I2C bus, one half-duplex I2S bus."""
    roles = {key_a.split(".")[0], key_b.split(".")[0]}
    if key_a.split(".")[-1] != key_b.split(".")[-1]:
        return False
    if roles == {"display", "codec"} and key_a.endswith(("scl", "sda")):
        return board["display"]["i2c"] == board["codec"]["i2c"]
    if roles == {"i2s_mic", "i2s_speaker"} and key_a.endswith(("sck", "ws")):
        return not board["full_duplex"] and board["i2s_mic"]["id"] == board["i2s_speaker"]["id"]
    return False


def _check_pins(board, chip, chip_name, out):
    seen = {}
    strapping_used = set()
    for key, pin, how in board_pins(board):
        if not _is_int(pin) or pin not in chip["gpios"]:
            out.append((key, "%r is not a GPIO of %s" % (pin, chip_name)))
            continue
        if pin in chip["flash_psram_pins"]:
            out.append((key, "GPIO%d is a flash/PSRAM pin on %s" % (pin, chip_name)))
        if pin in chip["console_pins"]:
            out.append((key, "GPIO%d carries the REPL/console (UART0 or USB) on %s" % (pin, chip_name)))
        if pin in chip["input_only"] and how == OUT:
            out.append((key, "GPIO%d is input only on %s and cannot drive this output" % (pin, chip_name)))
        if pin in chip["input_only"] and how == PULLUP:
            out.append((key, "GPIO%d is input only on %s and has no internal pull-up" % (pin, chip_name)))
        if pin in chip["strapping_pins"]:
            strapping_used.add(pin)
        if pin in seen and not _may_share(seen[pin], key, board):
            out.append((key, "GPIO%d is already used by %s" % (pin, seen[pin])))
        seen.setdefault(pin, key)
    justified = board.get("strapping_pins_used", {})
    for pin in sorted(strapping_used):
        if str(pin) not in justified:
            out.append(("strapping_pins_used", "GPIO%d is a strapping pin on %s (used by %s): justify it here"
                        % (pin, chip_name, seen[pin])))
    for pin in justified:
        if not pin.isdigit() or int(pin) not in strapping_used:
            out.append(("strapping_pins_used", "%r is listed but is not a strapping pin this board uses" % pin))


def _check_audio_buses(board, out):
    mic, spk = board["i2s_mic"], board["i2s_speaker"]
    if board["full_duplex"] and mic["id"] == spk["id"]:
        out.append(("i2s_speaker.id", "full duplex needs the microphone and speaker on different I2S buses "
                    "(a machine.I2S object is receive or transmit), both are %d" % mic["id"]))
    if mic["id"] == spk["id"] and (mic["sck"], mic["ws"]) != (spk["sck"], spk["ws"]):
        out.append(("i2s_speaker", "shares I2S(%d) with the microphone but not its sck/ws pins" % mic["id"]))


def main(argv):
    paths = argv or [str(board_path(n)) for n in board_names()]
    chips = load_chips()
    bad = 0
    for p in paths:
        problems = check_board_file(p, chips)
        for line in problems:
            print(line)
        print("%s: %s" % (p, "ok" if not problems else "%d problem(s)" % len(problems)))
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
