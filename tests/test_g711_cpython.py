"""G.711 agrees with CPython's audioop for every sample and code; `upbx bench codec` reports."""
import array
import json
import pathlib
import subprocess
import sys
import warnings

from upbx.common import g711
from tests.support import micropython_binary

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12
    import audioop  # audioop-lts on Python >= 3.13

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every 16-bit sample, as little-endian PCM.
ALL_PCM = array.array("h", range(-32768, 32768))
if sys.byteorder == "big":
    ALL_PCM.byteswap()
ALL_PCM = ALL_PCM.tobytes()
ALL_CODES = bytes(range(256))


def test_encoders_match_audioop_for_every_sample():
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_decoders_match_audioop_for_every_code():
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_portable_bytecode_matches_audioop():
    out = bytearray(65536)
    g711.ulaw_encode_into_portable(ALL_PCM, out)
    assert out == audioop.lin2ulaw(ALL_PCM, 2)
    g711.alaw_encode_into_portable(ALL_PCM, out)
    assert out == audioop.lin2alaw(ALL_PCM, 2)
    out = bytearray(512)
    g711.ulaw_decode_into_portable(ALL_CODES, out)
    assert out == audioop.ulaw2lin(ALL_CODES, 2)
    g711.alaw_decode_into_portable(ALL_CODES, out)
    assert out == audioop.alaw2lin(ALL_CODES, 2)


def test_into_variants_match_audioop_from_memoryviews():
    pcm = memoryview(ALL_PCM)[2000:2320]  # one 20 ms frame from inside a buffer
    codes = bytearray(160)
    assert g711.ulaw_encode_into(pcm, memoryview(codes)) == 160
    assert codes == audioop.lin2ulaw(bytes(pcm), 2)
    playout = bytearray(320)
    assert g711.ulaw_decode_into(memoryview(codes), memoryview(playout)) == 320
    assert playout == audioop.ulaw2lin(bytes(codes), 2)


def _upbx_bench(*args):
    upbx = pathlib.Path(sys.executable).parent / "upbx"
    command = [str(upbx)] if upbx.exists() else [sys.executable, "-m", "upbx.tools.cli"]
    return subprocess.run(command + ["bench"] + list(args), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_bench_codec_reports_both_interpreters_and_viper_beats_bytecode():
    micropython_binary()  # skips (fails in CI) without the unix port
    result = _upbx_bench("codec", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"machine", "codec"}
    assert report["machine"]["cpu_model"] or report["machine"]["processor"]
    codec = report["codec"]
    ops = {"ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode"}
    assert codec["frame"]["samples"] == 160
    assert codec["cpython"]["implementation"] == "python"
    assert set(codec["cpython"]["us_per_frame"]) == ops
    mp = codec["micropython"]
    assert "error" not in mp, mp.get("error")
    assert mp["implementation"] == "viper"
    assert set(mp["us_per_frame"]) == set(mp["bytecode_us_per_frame"]) == set(mp["viper_speedup"]) == ops
    for op in ops:
        assert 0 < mp["us_per_frame"][op] < mp["bytecode_us_per_frame"][op], op
        assert mp["viper_speedup"][op] > 1, op


def test_bench_without_json_prints_the_machine_and_a_table():
    result = _upbx_bench("codec")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("machine: ")
    assert "ulaw encode" in result.stdout and "viper speedup" in result.stdout


def test_bench_rejects_unknown_names():
    result = _upbx_bench("no-such-bench")
    assert result.returncode == 2
    assert "no-such-bench" in result.stderr
