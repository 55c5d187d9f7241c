import pathlib
import sys

# tests/common modules import each other and `common.*` the same way under both interpreters
sys.path.insert(0, str(pathlib.Path(__file__).parent / "common"))
