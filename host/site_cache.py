"""A remote host's copy of its site: the extensions with their secrets, the site's rules for
local calls, and the last system information, kept on disk for when the main host is away (B4).

The file holds the site's phone secrets: it is written 0600 (host/files.py).
"""
import json

from upbx.host import features
from upbx.host.files import private_file, write_private


class SiteCache:
    """What the main host last said about the site (its DIRECTORY and SYSINFO messages)."""

    def __init__(self, path):
        self.path = path
        self.warnings = []
        self.data = {"extensions": {}, "local_calls": True}
        try:
            with open(path) as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            return
        warning = private_file(path)
        if warning:
            self.warnings.append(warning)

    def save(self):
        private_file(self.path)
        write_private(self.path, json.dumps(self.data).encode())

    @property
    def extensions(self):
        """number -> {"name", "secret" (hex), "barred"}"""
        return self.data["extensions"]

    def extension(self, number):
        return self.data["extensions"].get(number)

    def secret(self, number):
        ext = self.data["extensions"].get(number)
        return bytes.fromhex(ext["secret"]) if ext else None

    @property
    def local_calls(self):
        return self.data.get("local_calls", True)

    @property
    def local_call_quota(self):
        return self.data.get("local_call_quota", 0)

    @property
    def sysinfo(self):
        """{"version", "info"} of the last system information, or a version of None."""
        return self.data.get("sysinfo") or {"version": None, "info": None}

    def set_directory(self, directory):
        """The site's directory as the main host sent it; the system information is kept, and so
        are feature settings changed here that the main host has not acknowledged yet."""
        sysinfo = self.sysinfo
        unsent = {n: self.features(n) for n in self.unsent_features}
        music = self.data.get("music_on_hold")
        self.data = dict(directory)
        self.data["sysinfo"] = sysinfo
        if music is not None:
            self.data["music_on_hold"] = music
        self.data["features"] = dict(directory.get("features") or {})
        self.data["features"].update(unsent)
        self.data["features_unsent"] = sorted(unsent)
        self.save()

    # station features (host/features.py): this host's copy is what its phones set

    def features(self, number):
        """An extension's feature settings (the defaults when none were set)."""
        settings = (self.data.get("features") or {}).get(number)
        return dict(settings) if settings else features.defaults()

    @property
    def unsent_features(self):
        """Extensions whose settings changed here and the main host has not acknowledged."""
        return list(self.data.get("features_unsent") or ())

    def set_features(self, number, settings, unsent=True):
        self.data.setdefault("features", {})[number] = settings
        pending = set(self.unsent_features)
        if unsent:
            pending.add(number)
        self.data["features_unsent"] = sorted(pending)
        self.save()

    def features_acknowledged(self, number, settings):
        """The main host stored settings for number: no longer unsent if they are still ours."""
        if number in self.unsent_features and self.features(number) == settings:
            self.data["features_unsent"] = [n for n in self.unsent_features if n != number]
            self.save()

    def set_sysinfo(self, version, info):
        self.data["sysinfo"] = {"version": version, "info": info}
        self.save()
