"""The call-feature console commands a handset turns into star codes (docs/features.md):
`!dnd`, `!forward`, `!pickup` (`!pickup N`: directed).

Rarely run (an operator's or a script's `!dnd` / `!forward`): firmware/app.py imports this
module for each use and forgets it again (firmware.hal.rarely), so that its code does not
stay on a handset's heap.
"""


def star_code(cmd):
    """The star code a `!dnd`, `!forward`, `!pickup` or `!voicemail` console command dials (docs/features.md), else None."""
    if cmd == "!pickup":       # a call ringing at another phone of the site (docs/features.md)
        return "*8"
    if cmd.startswith("!pickup "):   # directed: the call ringing at that phone
        number = cmd[8:].strip()
        return "**" + number if number.isdigit() else None
    if cmd == "!voicemail":
        return "*97"      # the phone's own mailbox
    words = cmd.split()
    what = words[1] if len(words) > 1 else ""
    if words[0] == "!dnd" and len(words) == 2 and what in ("on", "off"):
        return "*78" if what == "on" else "*79"
    if words[0] != "!forward":
        return None
    if what == "off" and len(words) == 2:
        return "*73"
    if len(words) < 3 or not words[2].isdigit():
        return None
    if what == "always" and len(words) == 3:
        return "*72" + words[2]
    if what == "busy" and len(words) == 3:
        return "*90" + words[2]
    if what == "noanswer" and len(words) == 3:
        return "*92" + words[2]
    if what == "noanswer" and len(words) == 4 and words[3].isdigit():
        return "*92%s*%s" % (words[2], words[3])
    return None

