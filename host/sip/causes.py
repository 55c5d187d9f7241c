"""upbx release causes and SIP final statuses, both ways (issue 13: busy 486, no answer 480/408,
not permitted 403, unknown 404, network busy 503; docs/sip.md "Calls")."""

from upbx.common import wire

CAUSE_TO_SIP = {wire.CAUSE_BUSY: 486, wire.CAUSE_DND: 486, wire.CAUSE_NO_ANSWER: 480,
                wire.CAUSE_NOT_PERMITTED: 403, wire.CAUSE_UNKNOWN_EXTENSION: 404,
                wire.CAUSE_NETWORK_BUSY: 503, wire.CAUSE_UNREACHABLE: 480, wire.CAUSE_FORWARD_LOOP: 482,
                wire.CAUSE_PROTOCOL_ERROR: 500, wire.CAUSE_NO_OUTSIDE_LINE: 503}
SIP_TO_CAUSE = {486: wire.CAUSE_BUSY, 600: wire.CAUSE_BUSY, 603: wire.CAUSE_BUSY, 480: wire.CAUSE_NO_ANSWER,
                408: wire.CAUSE_NO_ANSWER, 487: wire.CAUSE_NO_ANSWER, 403: wire.CAUSE_NOT_PERMITTED,
                404: wire.CAUSE_UNKNOWN_EXTENSION, 484: wire.CAUSE_UNKNOWN_EXTENSION,
                503: wire.CAUSE_NETWORK_BUSY, 488: wire.CAUSE_NOT_PERMITTED}


def sip_status(cause):
    """The final status a SIP phone is given for a upbx cause (480 for any other)."""
    return CAUSE_TO_SIP.get(cause, 480)


def upbx_cause(status):
    """The upbx cause of a SIP final status: any other 5xx is network busy, any other 4xx/6xx not permitted."""
    return SIP_TO_CAUSE.get(status, wire.CAUSE_NETWORK_BUSY if status >= 500 else wire.CAUSE_NOT_PERMITTED)
