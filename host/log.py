"""The hosts' log: `log.info("event", key=value)` -> a text line or one JSON object, on stderr."""
import json
import logging
import sys
import time


class StructuredLog:
    """`log.info("event", key=value)` -> text or one JSON object per line."""

    def __init__(self, name, level="info", fmt="text"):
        self.name = name
        self.fmt = fmt
        self.logger = logging.getLogger(name)
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
        self.logger.setLevel(getattr(logging, level.upper()))

    def _emit(self, level, event, fields):
        if not self.logger.isEnabledFor(level):
            return
        stamp = time.strftime("%H:%M:%S") + ".%03d" % (int(time.time() * 1000) % 1000)
        if self.fmt == "json":
            record = {"t": time.time(), "daemon": self.name, "level": logging.getLevelName(level).lower(),
                      "event": event}
            record.update(fields)
            self.logger.log(level, json.dumps(record, default=str))
        else:
            text = " ".join("%s=%s" % (k, v) for k, v in fields.items())
            self.logger.log(level, "%s %s %-5s %s %s" % (stamp, self.name, logging.getLevelName(level),
                                                         event, text))

    def debug(self, event, **fields):
        self._emit(logging.DEBUG, event, fields)

    def info(self, event, **fields):
        self._emit(logging.INFO, event, fields)

    def warning(self, event, **fields):
        self._emit(logging.WARNING, event, fields)

    def error(self, event, **fields):
        self._emit(logging.ERROR, event, fields)
