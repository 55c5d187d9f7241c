"""The handset's conference command (docs/features.md, Conference): `!conference` and the keys `C *`.

Rarely run: loaded for each use and forgotten again (firmware.hal.rarely). The second line is
common/phone.py's (`other`, firmware/lines.py); the join itself is common/conference.py.
"""


def join(app, now):
    """`!conference` / `C *`: the current call and the held one become one conference."""
    from common.compat import forget
    from common.conference import conference
    forget("common.conference")
    if conference(app.phone, now):
        app.log("I", "conference requested")
        app.hal.display("conference", "joining")
    else:
        app.log("W", "cannot join a conference now (one call connected and one held are needed)")
