"""Run one test module of tests/common under MicroPython (or CPython).

Usage: micropython tests/mp_runner.py MODULE_NAME
Calls every top-level function named test_* and prints one line per test.
Exits 1 after printing the module, test and assertion of the first failures.
"""
import sys

ROOT = __file__.rsplit("/", 2)[0] if "/" in __file__ else "."
if ROOT == "tests":
    ROOT = "."
sys.path.insert(0, ROOT)
sys.path.insert(0, ROOT + "/tests/common")


def main():
    name = sys.argv[1]
    module = __import__(name)
    failed = 0
    passed = 0
    for attr in sorted(dir(module)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(module, attr)
        try:
            fn()
            passed += 1
        except Exception as exc:  # report every failure, then exit non-zero
            failed += 1
            print("FAIL %s.%s: %s: %s" % (name, attr, type(exc).__name__, exc))
            sys.print_exception(exc) if hasattr(sys, "print_exception") else None
    print("%s: %d passed, %d failed" % (name, passed, failed))
    sys.exit(1 if failed else 0)


main()
