"""Prometheus metrics of a host (docs/operations.md, "Metrics"): a collector that reads the core at
scrape time, and the HTTP listener that serves it from the daemon's own event loop.

The core (host/core.py) keeps plain counters (Stats, BandwidthMeter, CallStats) and knows nothing of
Prometheus; `HostCollector.collect()` turns what it holds into metric families when Prometheus asks.
The listener is aiohttp on the daemon's asyncio loop, not prometheus_client's `start_http_server`
(a thread): a scrape then runs between two datagrams, so it reads the core's dictionaries while
nothing changes them, with no lock on the path of every frame.

Needs the 'metrics' extra (prometheus_client, aiohttp); `missing()` says what is not installed.
"""
import os

EXTRA = "metrics"

# Stats counters with a metric of their own: (metric, label value or None)
_COUNTERS = {
    "datagrams in": ("datagrams_received", None),
    "bytes in": ("received_bytes", None),
    "media out": ("datagrams_sent", "media"),
    "signalling out": ("datagrams_sent", "signalling"),
    "bytes out": ("sent_bytes", None),
    "media in": ("media_frames_received", None),
    "trunks in": ("trunk_frames_received", None),
    "trunks out": ("trunk_frames_sent", None),
}
ADMISSION_DROPS = ("calls per peer", "no free call number")   # Switch.admit: counted as drops too
ADMISSION_PREFIX = "admission refused: "
LOGIN_PREFIX = "login refused: "
MESSAGE_PREFIX = "msg "


def missing():
    """None when prometheus_client and aiohttp import, else the message for the operator."""
    try:
        import aiohttp  # noqa: F401
        import prometheus_client.aiohttp  # noqa: F401
    except ImportError as exc:
        return ("metrics need %s, from the '%s' extra: pip install 'upbx[%s]'"
                % (exc.name or "prometheus_client and aiohttp", EXTRA, EXTRA))
    return None


class HostCollector:
    """A prometheus_client collector over one host core (MainHost or RemoteHost) and its daemon."""

    def __init__(self, core, daemon=None):
        self.core = core
        self.daemon = daemon

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        core = self.core
        role = "main" if hasattr(core, "directory") else "remote"
        calls = list(core.switch.calls.values())
        stats = core.stats
        counters = stats.counters
        fast = self.daemon is not None and self.daemon._batch is not None

        info = GaugeMetricFamily("upbx_host_info", "This host: its name, role and relay path (always 1)",
                                 labels=["name", "role", "fast_path"])
        info.add_metric([core.name, role, "C" if fast else "python"], 1)
        yield info

        phones = GaugeMetricFamily("upbx_registered_phones", "Phones registered at this host now")
        phones.add_metric([], sum(1 for link in _links(core) if link.kind == "phone"))
        yield phones

        by_path, frames_now = core.call_stats.look(calls)
        live = GaugeMetricFamily("upbx_calls", "Calls this host switches now, by media path and state",
                                 labels=["path", "state"])
        for (path, state), n in sorted(by_path.items()):
            live.add_metric([path, state], n)
        yield live

        ended = CounterMetricFamily("upbx_calls_ended", "Calls this host switched that have ended, by media "
                                    "path and release cause", labels=["path", "cause"])
        for (path, cause), n in sorted(core.call_stats.ended.items()):
            ended.add_metric([path, cause], n)
        yield ended

        setup = core.call_stats.setup
        histogram = HistogramMetricFamily("upbx_call_setup_seconds", "Time from a SETUP in to the first "
                                          "ALERTING or ANSWER this host passed on, per call")
        histogram.add_metric([], setup.cumulative(), sum_value=setup.sum)
        yield histogram

        frames = CounterMetricFamily("upbx_frames_relayed", "Media frames this host passed from one leg of a "
                                     "call to the other (the C fast path's included)")
        frames.add_metric([], frames_now)
        yield frames

        drops = CounterMetricFamily("upbx_drops", "Datagrams, messages and frames dropped, by reason",
                                    labels=["reason"])
        for reason, n in sorted(stats.drops.items()):
            drops.add_metric([reason], n)
        yield drops

        admission = CounterMetricFamily("upbx_admission_refusals", "Calls refused by admission control "
                                        "(\"network busy\"), by reason", labels=["reason"])
        refusals = {name[len(ADMISSION_PREFIX):]: n for name, n in counters.items() if name.startswith(ADMISSION_PREFIX)}
        for reason in ADMISSION_DROPS:
            if reason in stats.drops:
                refusals[reason] = stats.drops[reason]
        for reason, n in sorted(refusals.items()):
            admission.add_metric([reason], n)
        yield admission

        logins = CounterMetricFamily("upbx_login_failures", "Logins (handshakes) of phones and remote hosts "
                                     "refused by this host, by reason", labels=["reason"])
        for name, n in sorted(counters.items()):
            if name.startswith(LOGIN_PREFIX):
                logins.add_metric([name[len(LOGIN_PREFIX):]], n)
        yield logins

        yield from self._traffic(counters, CounterMetricFamily)
        yield from self._bandwidth(CounterMetricFamily, GaugeMetricFamily)
        yield from self._sysinfo(GaugeMetricFamily)
        if role == "main":
            yield from self._main(GaugeMetricFamily)
        else:
            yield from self._remote(CounterMetricFamily, GaugeMetricFamily)
        if fast and role == "main":
            taken = CounterMetricFamily("upbx_fast_path_datagrams", "Datagrams the relay's C fast path took "
                                        "(docs/relay.md)")
            from upbx.host.relay_worker import WORKER_TAKEN   # the relay workers' share, from their reports
            taken.add_metric([], self.daemon._batch.taken() + self.core.stats.counters.get(WORKER_TAKEN, 0))
            yield taken

    def _traffic(self, counters, Counter):
        families = {
            "datagrams_received": Counter("upbx_datagrams_received", "UDP datagrams received"),
            "received_bytes": Counter("upbx_received_bytes", "UDP payload bytes received"),
            "datagrams_sent": Counter("upbx_datagrams_sent", "UDP datagrams sent, by kind", labels=["kind"]),
            "sent_bytes": Counter("upbx_sent_bytes", "UDP payload bytes sent"),
            "media_frames_received": Counter("upbx_media_frames_received", "Media frames received that "
                                             "authenticated (mini frames and trunk entries)"),
            "trunk_frames_received": Counter("upbx_trunk_frames_received", "Trunk frames received that "
                                             "authenticated"),
            "trunk_frames_sent": Counter("upbx_trunk_frames_sent", "Trunk frames sent"),
        }
        messages = Counter("upbx_messages_received", "Signalling messages received, by type", labels=["type"])
        events = Counter("upbx_events", "Other things this host counts (`upbx status` counters), by name",
                         labels=["event"])
        for name, n in sorted(counters.items()):
            mapped = _COUNTERS.get(name)
            if mapped is not None:
                metric, label = mapped
                families[metric].add_metric([label] if label else [], n)
            elif name.startswith(MESSAGE_PREFIX):
                messages.add_metric([name[len(MESSAGE_PREFIX):]], n)
            elif not name.startswith((ADMISSION_PREFIX, LOGIN_PREFIX)):
                events.add_metric([name], n)
        for metric, label in _COUNTERS.values():   # 0 until counted: a rate() works from the first scrape
            family = families[metric]
            if not any(s.labels == ({"kind": label} if label else {}) for s in family.samples):
                family.add_metric([label] if label else [], 0)
        yield from families.values()
        yield messages
        yield events

    def _bandwidth(self, Counter, Gauge):
        meter = self.core.meter
        total = Counter("upbx_traffic_bytes", "Bytes on the wire (UDP payload + IPv4/UDP headers) by peer "
                        "group and direction: \"site NAME\" at the main host; \"wan\", \"lan\", \"main\", "
                        "\"pair NAME\" at a remote host", labels=["group", "direction"])
        rate = Gauge("upbx_traffic_bits_per_second", "The same over the last second (`upbx status` bandwidth)",
                     labels=["group", "direction"])
        for name in sorted(meter.groups):
            group = meter.groups[name]
            n_in, n_out = meter.totals.get(name, (0, 0))
            total.add_metric([name, "in"], n_in)
            total.add_metric([name, "out"], n_out)
            rate.add_metric([name, "in"], group["in_kbps"] * 1000)
            rate.add_metric([name, "out"], group["out_kbps"] * 1000)
        yield total
        yield rate

    def _sysinfo(self, Gauge):
        """The system information version and how far its fan-out to this host's phones is behind (B6)."""
        core = self.core
        version = core._sysinfo_version if hasattr(core, "directory") else core.cache.sysinfo["version"]
        current = Gauge("upbx_sysinfo_version", "Version of the system information this host has (main: "
                        "serves)")
        if version is not None:
            current.add_metric([], version)
        yield current
        behind = [link.name for link in _links(core) if link.kind == "phone"
                  and core.sysinfo_acked.get(link.name) != version and version is not None]
        waiting = Gauge("upbx_sysinfo_phones_behind", "Registered phones that have not acknowledged this "
                        "version yet")
        waiting.add_metric([], len(behind))
        yield waiting
        sent = [core.sysinfo_sent_ms[n] for n in behind if n in core.sysinfo_sent_ms]
        lag = Gauge("upbx_sysinfo_lag_seconds", "How long the oldest unacknowledged copy to a phone has been "
                    "waiting (0: every phone has this version)")
        lag.add_metric([], max(0, core.now - min(sent)) / 1000.0 if sent else 0.0)
        yield lag

    def _main(self, Gauge):
        hosts = Gauge("upbx_remote_hosts", "Remote hosts logged in now")
        hosts.add_metric([], sum(1 for link in self.core.links.values() if link.kind == "host"))
        yield hosts

    def _remote(self, Counter, Gauge):
        core = self.core
        up = Gauge("upbx_main_host_up", "1 while this remote host is logged in to the main host")
        up.add_metric([], 1 if core.main_link.up else 0)
        yield up
        logins = Counter("upbx_main_host_logins", "Logins of this remote host to the main host")
        logins.add_metric([], core.login.logins)
        yield logins
        budget = Gauge("upbx_uplink_budget_bits_per_second", "Uplink budget for call admission (0: no limit)")
        budget.add_metric([], core.config.uplink_kbps * 1000)
        yield budget
        calls = core._uplink_calls()
        committed = Gauge("upbx_uplink_committed_bits_per_second", "Uplink the calls crossing it cost by the "
                          "admission formula (docs/bandwidth.md)")
        committed.add_metric([], core._uplink_kbps() * 1000 if calls else 0.0)
        yield committed
        n = Gauge("upbx_uplink_calls", "Calls crossing the uplink now")
        n.add_metric([], calls)
        yield n
        records = Gauge("upbx_records_pending", "Call records kept on disk waiting for upload to the main host")
        records.add_metric([], core.records.pending_count())
        yield records
        voicemail = Gauge("upbx_voicemail_pending", "Voicemail messages waiting for upload to the main host")
        voicemail.add_metric([], len(core.voicemail.store.pending_upload()) if core.voicemail.store else 0)
        yield voicemail


def _links(core):
    """The logged-in links of a core: the main host's peers, a remote host's phones."""
    return core.links.values() if hasattr(core, "links") else core.phone_links.values()


class MetricsListener:
    """GET /metrics over HTTP on the daemon's event loop (aiohttp), from a registry holding the host's
    collector and the process's (CPU, memory, open files)."""

    def __init__(self, core, daemon, address):
        self.address = address      # (host, port) as configured
        self.collector = HostCollector(core, daemon)
        self.bound = None           # (host, port) actually listened on
        self._runner = None

    async def start(self):
        from aiohttp import web
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client.aiohttp import make_aiohttp_handler
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        ProcessCollector(registry=registry)
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address[0], self.address[1], reuse_address=True)
        await site.start()
        self.bound = site._server.sockets[0].getsockname()[:2]
        return self.bound

    async def stop(self):
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class MetricsService:
    """The metrics listener as one of the daemon's services (host/daemon.py: started in its loop once
    the socket is bound, stopped on the way out); a port it cannot take stops the daemon."""

    def __init__(self, address):
        self.address = address      # (host, port) as configured
        self.listener = None

    async def start(self, daemon):
        from upbx.host.daemon import ServiceError
        self.listener = MetricsListener(daemon.core, daemon, self.address)
        try:
            bound = await self.listener.start()
        except OSError as exc:
            raise ServiceError("metrics: cannot listen on %s:%d: %s"
                               % (self.address[0], self.address[1],
                                  os.strerror(exc.errno) if exc.errno else exc)) from None
        daemon.log.info("metrics", listen="%s:%d" % bound)

    async def stop(self):
        if self.listener is not None:
            await self.listener.stop()
