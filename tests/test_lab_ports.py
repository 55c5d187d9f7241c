"""tools/lab.py's ports for a test's labs under pytest-xdist: each worker's slice, ports never given twice.

The run of session 10's first merged CI: late in the run a worker's slice held hundreds of single ports given
out at random (free_port), and free_ports(20), which picked a random run of 20 a thousand times, found none free
of them: two SIP tests errored "no 20 free consecutive ports" although the slice had such runs left.
"""
import pytest

from upbx.tools import lab


@pytest.fixture
def slice_gw3(monkeypatch):
    """Worker gw3's slice, with the run's issued ports set aside (restored after). Whether a port is bound
    now is taken as "no": in a parallel run gw3's own labs hold some of these ports meanwhile, and what is
    tested here is the search over what this run gave out (the SIP tests use the real check)."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setattr(lab, "_issued", set())
    monkeypatch.setattr(lab, "_udp_free", lambda port: True)
    return lab._worker_ports()


def test_the_one_run_of_free_ports_left_in_a_slice_is_found(slice_gw3):
    ports = slice_gw3
    gap = ports[0] + 700               # even: the slices start at even ports
    lab._issued.update(p for p in ports if not gap <= p < gap + 20)
    assert lab.free_ports(20) == gap
    assert set(range(gap, gap + 20)) <= lab._issued     # given out: never again while the slice lasts


def test_a_slice_with_no_run_left_starts_again(slice_gw3):
    ports = slice_gw3
    lab._issued.update(ports[::10])    # every tenth port given out: no 20 in a row free of them
    first = lab.free_ports(20)
    assert first % 2 == 0 and ports[0] <= first and first + 19 <= ports[-1]
    assert lab._issued == set(range(first, first + 20))   # the slice started again from this run


def test_runs_given_out_do_not_overlap(slice_gw3):
    firsts = [lab.free_ports(20) for _ in range(30)]
    taken = [p for f in firsts for p in range(f, f + 20)]
    assert len(taken) == len(set(taken))
