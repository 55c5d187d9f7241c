"""Board files: each one is a handset someone can wire up without frying a pin."""
import copy
import importlib.util
import json

import pytest

from tests.support import ROOT

_spec = importlib.util.spec_from_file_location("upbx_board_schema", ROOT / "boards" / "schema.py")
schema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(schema)

CHIPS = schema.load_chips()
BOARDS = schema.board_names()
REQUIRED = ["esp32-devkitc-inmp441", "esp32s3-devkitc-inmp441", "esp32-lyrat-v4.3", "esp32-a1s-audiokit",
            "esp32-wrover-devkitc-inmp441", "esp32s3-n8r8-devkitc-inmp441"]


def board(name):
    with open(schema.board_path(name)) as f:
        return json.load(f)


def problems(b):
    return ["%s: %s" % kv for kv in schema.check_board(b, CHIPS, b.get("name"))]


def test_the_required_boards_exist():
    assert set(REQUIRED) <= set(BOARDS)


@pytest.mark.parametrize("name", BOARDS)
def test_board_file_is_valid(name):
    assert schema.check_board_file(schema.board_path(name)) == []


@pytest.mark.parametrize("name", BOARDS)
def test_no_output_on_input_only_flash_or_console_pin(name):
    b = board(name)
    chip = CHIPS[b["chip"]]
    for key, pin, how in schema.board_pins(b):
        assert pin in chip["gpios"], key
        assert pin not in chip["flash_psram_pins"], key
        assert pin not in chip["console_pins"], key
        if pin in chip["input_only"]:
            assert how == schema.IN, "%s: GPIO%d is input only" % (key, pin)


@pytest.mark.parametrize("name", BOARDS)
def test_strapping_pins_are_justified_or_unused(name):
    b = board(name)
    used = {pin for _, pin, _ in schema.board_pins(b)}
    for pin in CHIPS[b["chip"]]["strapping_pins"]:
        if pin in used:
            assert b["strapping_pins_used"][str(pin)].strip()


@pytest.mark.parametrize("name", BOARDS)
def test_duplex_matches_the_i2s_buses(name):
    b = board(name)
    if b["full_duplex"]:
        assert b["i2s_mic"]["id"] != b["i2s_speaker"]["id"]
    else:
        assert b["ptt_key"] in [k["name"] for k in b["keys"]]


@pytest.mark.parametrize("name", BOARDS)
def test_flash_offset_follows_the_chip(name):
    b = board(name)
    assert b["flash_offset"] == {"esp32": 0x1000, "esp32s3": 0}[b["chip"]]


@pytest.mark.parametrize("name", BOARDS)
def test_each_board_names_its_image_and_only_boards_without_psram_need_it_frozen(name):
    image = board(name)["micropython_image"]
    assert image["board"] == CHIPS[board(name)["chip"]]["micropython_board"]
    psram = image.get("variant") in ("SPIRAM", "SPIRAM_OCT")
    assert image["needs_frozen"] is (image["board"] == "ESP32_GENERIC" and not psram)


def test_the_psram_boards_take_the_psram_images():
    assert board("esp32-wrover-devkitc-inmp441")["micropython_image"] == {
        "board": "ESP32_GENERIC", "variant": "SPIRAM", "needs_frozen": False, "flash_mib": 4, "ota": False}
    assert board("esp32s3-n8r8-devkitc-inmp441")["micropython_image"] == {
        "board": "ESP32_GENERIC_S3", "variant": "SPIRAM_OCT", "needs_frozen": False, "flash_mib": 8, "ota": True}
    # same wiring as the boards without PSRAM: every pin keeps off the PSRAM lines
    for psram, plain in (("esp32-wrover-devkitc-inmp441", "esp32-devkitc-inmp441"),
                         ("esp32s3-n8r8-devkitc-inmp441", "esp32s3-devkitc-inmp441")):
        assert schema.board_pins(board(psram)) == schema.board_pins(board(plain))


def test_a_wrong_image_is_rejected():
    assert broken(micropython_image__variant="SPIRAM_OCT") == [
        "micropython_image.variant: ESP32_GENERIC has no variant 'SPIRAM_OCT' (MicroPython v1.28.0 has D2WD, "
        "OTA, SPIRAM, UNICORE)"]
    assert broken(micropython_image__board="ESP32_GENERIC_S3") == [
        "micropython_image.board: ESP32_GENERIC_S3 is not the generic image for esp32 (ESP32_GENERIC is)"]
    assert broken(micropython_image__needs_frozen="yes") == ["micropython_image.needs_frozen: must be true or false"]
    assert broken(micropython_image=KeyError) == ["micropython_image: missing"]
    assert broken(micropython_image__board="esp32 generic") == [
        "micropython_image.board: must be a MicroPython board name (ports/esp32/boards), e.g. 'ESP32_GENERIC'"]


def test_which_boards_take_image_updates():
    """docs/boards.md, "Over-the-air images": the boards whose frozen image is the firmware (no PSRAM) and the
    8 MiB ESP32-S3 modules get MicroPython's OTA layout; the 4 MiB PSRAM boards take bundles of files."""
    ota = {name: board(name)["micropython_image"].get("ota", False) for name in BOARDS}
    assert sorted(n for n, v in ota.items() if v) == [
        "esp32-devkitc-inmp441", "esp32s3-devkitc-inmp441", "esp32s3-n8r8-devkitc-inmp441"]
    for name in BOARDS:
        assert board(name)["micropython_image"]["flash_mib"] == (8 if board(name)["chip"] == "esp32s3" else 4)


def test_a_wrong_ota_or_flash_size_is_rejected():
    assert broken(micropython_image__ota="yes") == ["micropython_image.ota: must be true or false"]
    assert broken(micropython_image__flash_mib=3) == [
        "micropython_image.flash_mib: must be the module's flash size in MiB, one of 2, 4, 8, 16, 32"]
    assert broken(micropython_image__flash_mib=2) == [
        "micropython_image.ota: needs at least 4 MiB of flash (two application slots); this board has 2"]
    assert broken(micropython_image__flash_mib=KeyError) == [
        "micropython_image.flash_mib: missing: \"ota\": true chooses MicroPython's OTA partition table by the "
        "flash size"]
    assert broken(micropython_image__variant="OTA") == [
        "micropython_image.variant: OTA: say \"ota\": true instead (with flash_mib): `upbx build --image esp32` "
        "chooses MicroPython's OTA variant or layout from them"]
    assert broken(micropython_image__ota=False, micropython_image__flash_mib=2) == []


def test_codec_boards_say_mclk_is_unavailable():
    for name in ("esp32-lyrat-v4.3", "esp32-a1s-audiokit"):
        b = board(name)
        assert b["codec"]["type"] == "es8388" and b["codec"]["address"] == 0x10
        assert b["codec"]["mclk_available"] is False
        assert "MCLK" in b["notes"] and "NOT verified" in b["notes"]


def test_boards_with_a_display_install_its_driver():
    for name in BOARDS:
        b = board(name)
        if "display" in b:
            assert b["display"]["type"] in b["mip_packages"]


# --- each rule rejects a board that breaks it -----------------------------------

REF = board("esp32-devkitc-inmp441")


def broken(**changes):
    b = copy.deepcopy(REF)
    for path, value in changes.items():
        obj = b
        keys = path.split("__")
        for k in keys[:-1]:
            obj = obj[int(k)] if k.isdigit() else obj[k]
        last = keys[-1]
        if value is KeyError:
            del obj[last]
        elif last.isdigit():
            obj[int(last)] = value
        else:
            obj[last] = value
    return problems(b)


def test_pullup_column_on_input_only_pin_is_rejected():
    assert broken(keypad__cols__1=35) == ["keypad.cols[1]: GPIO35 is input only on esp32 and has no internal pull-up"]


def test_output_on_input_only_pin_is_rejected():
    assert "i2s_speaker.sd: GPIO36 is input only on esp32 and cannot drive this output" in broken(i2s_speaker__sd=36)


def test_flash_pin_is_rejected():
    assert broken(keypad__rows__0=16) == ["keypad.rows[0]: GPIO16 is a flash/PSRAM pin on esp32"]


def test_pin_used_twice_is_rejected():
    assert broken(keypad__rows__0=27) == ["keypad.rows[0]: GPIO27 is already used by i2s_speaker.sd"]


def test_full_duplex_on_one_i2s_bus_is_rejected():
    found = broken(i2s_speaker__id=0)
    assert any(p.startswith("i2s_speaker.id: full duplex needs") for p in found)


def test_unjustified_strapping_pin_is_rejected():
    found = broken(strapping_pins_used={"5": "keypad column"})
    assert found == ["strapping_pins_used: GPIO15 is a strapping pin on esp32 (used by keypad.cols[3]): justify it here"]


def test_wrong_flash_offset_and_missing_sources_are_rejected():
    found = broken(flash_offset=0, sources=KeyError)
    assert "sources: missing" in found
    assert "flash_offset: 0, but MicroPython images for esp32 go at 0x1000" in found


def test_half_duplex_without_ptt_key_is_rejected():
    b = copy.deepcopy(board("esp32-lyrat-v4.3"))
    del b["ptt_key"]
    assert problems(b) == ["ptt_key: a half-duplex board needs a push-to-talk key naming one of keys "
                           "['rec', 'mode', 'play', 'set', 'vol_up', 'vol_down']"]


def test_broken_board_file_message_names_file_key_and_problem(tmp_path):
    b = copy.deepcopy(REF)
    b["name"] = "bad-board"
    b["keypad"]["cols"][0] = 39
    b["pa_enable"] = {"pin": 7, "active_high": True}
    path = tmp_path / "bad-board.json"
    path.write_text(json.dumps(b))
    found = schema.check_board_file(path)
    assert "%s: keypad.cols[0]: GPIO39 is input only on esp32 and has no internal pull-up" % path in found
    assert "%s: pa_enable.pin: GPIO7 is a flash/PSRAM pin on esp32" % path in found
    with pytest.raises(schema.BoardError) as err:
        schema.load_board(str(path))
    assert str(path) in str(err.value) and "keypad.cols[0]" in str(err.value)


def test_typo_in_a_key_is_rejected(tmp_path):
    b = copy.deepcopy(REF)
    b["i2s_mic"]["sdd"] = b["i2s_mic"].pop("sd")
    path = tmp_path / "esp32-devkitc-inmp441.json"
    path.write_text(json.dumps(b))
    found = schema.check_board_file(path)
    assert "%s: i2s_mic.sd: missing" % path in found
    assert any(p.startswith("%s: i2s_mic.sdd: unknown key" % path) for p in found)
