"""host/limits.py on a virtual clock: what a source sending without pause gets examined."""
from upbx.host.limits import BURST, FAILURE_COST, RATE_PER_S, TokenBuckets


def _flood(buckets, ip, seconds, every_ms=1, fail=True):
    examined = 0
    for now in range(0, seconds * 1000, every_ms):
        if buckets.take(ip, now):
            examined += 1
            if fail:
                buckets.charge(ip, FAILURE_COST)
    return examined


def test_a_flood_of_failures_is_examined_at_the_failure_rate_not_the_token_rate():
    buckets = TokenBuckets()
    examined = _flood(buckets, "198.18.0.9", 60)
    # the burst, then one failure per 11 tokens earned: 36 + 60 * 50 / 11 = 308 (not 36 + 3000)
    expected = BURST / (1 + FAILURE_COST) + 60 * RATE_PER_S / (1 + FAILURE_COST)
    assert expected - 2 <= examined <= expected + 1, examined


def test_successes_cost_one_token_and_the_debt_of_a_flood_is_bounded():
    buckets = TokenBuckets()
    assert _flood(buckets, "198.18.0.10", 2, fail=False) == BURST + 2 * RATE_PER_S - 1
    # a source in debt after failures is examined again within BURST / RATE_PER_S seconds of its last
    for _ in range(100):
        buckets.charge("198.18.0.10", FAILURE_COST)
    assert not buckets.take("198.18.0.10", 2000)
    assert buckets.take("198.18.0.10", 2000 + 1000 * BURST // RATE_PER_S + 20)


def test_other_sources_keep_their_own_buckets():
    buckets = TokenBuckets()
    _flood(buckets, "198.18.0.11", 5)
    assert buckets.take("198.18.0.12", 5000)
