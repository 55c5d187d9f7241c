"""The rules both hosts apply the same way, as pure functions of what they know."""
from upbx.common import wire
from upbx.common.media import call_kbps


def local_call_cause(local_calls, quota, caller_barred, active):
    """B3: None to grant a local call, else the cause that refuses it.

    local_calls: the site allows calls among its own phones; quota: the most local calls the
    site may have at once (0: no limit); caller_barred: the calling extension is barred;
    active: the site's local calls now. The main host decides with its directory, a remote
    host with its cached copy while the main host is away (B4): both call this.
    """
    if not local_calls or caller_barred:
        return wire.CAUSE_NOT_PERMITTED
    if quota and active >= quota:
        return wire.CAUSE_NETWORK_BUSY
    return None


def uplink_admits(budget_kbps, calls, trunks):
    """B5: whether one more call fits the uplink budget (0: no limit) next to `calls` calls
    carried in `trunks` trunk datagrams per tick (common.media.call_kbps). Local calls never count."""
    return not budget_kbps or call_kbps(calls + 1, trunks) <= budget_kbps
