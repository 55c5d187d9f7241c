"""Voicemail while the main host is unreachable (B4), on the real host cores in one process
(tests/inprocess.py): the site's remote host keeps a copy of its phones' mailboxes current while
the main host is up (messages, states, uploaded greetings); with the main host away `*97` there
plays the main host's messages and those recorded meanwhile, a caller hears the extension's
uploaded greeting, and the saves and deletes made meanwhile reach the main host once it is back,
exactly once (docs/features.md, Voicemail). Who spoke: each phone's own tone, by Goertzel.
"""
from upbx.common.g711 import ulaw_decode
from upbx.common.login import UP
from upbx.host import voicemail
from upbx.host.voicemail import load_wav
from upbx.tools.lab import goertzel_power
from tests.inprocess import MAIN, attach_host
from tests.test_hold import _tone_wav
from tests.test_voicemail import TONES, _leave_message, _menu, _reach_voicemail, _store, _world_with

GREETING_HZ = 1000.0


def _cached(world, mailbox):
    return [(m["caller"], m["state"], m["origin"]) for m in world.a.voicemail.store.messages(mailbox)]


def _greeting_heard(world, caller, mailbox):
    """caller reaches mailbox's voicemail; the share of the first second that was the greeting's tone."""
    _reach_voicemail(world, caller, "*98" + mailbox)
    end = world.phones[caller]
    end.received = []
    world.run(1000)
    frames = [f for f in end.received if len(f) == 160]
    tone = sum(1 for f in frames if goertzel_power(ulaw_decode(f), 160, GREETING_HZ) > 1e10)
    world.hangup(caller)
    world.run(200)
    return tone / max(1, len(frames))


def test_b4_retrieval_plays_the_main_hosts_messages_and_changes_reach_it_once(tmp_path):
    world = _world_with(tmp_path, ("101", "102", "301"), voicemail_on=("102",))
    try:
        p = world.phones
        p["102"].phone.stop(world.net.now)                                # 102 is off: calls go to its mailbox
        p["102"].flush()
        world.settle()
        _leave_message(world, "301", "102", speak_ms=1000)                # two messages at the main host
        _leave_message(world, "101", "102", speak_ms=1000)
        assert [m["caller"] for m in _store(world).messages("102")] == ["301", "101"]
        _tone_wav(tmp_path / "hello.wav", GREETING_HZ, 1.0)               # 102's own greeting, as `upbx admin` sets it
        _store(world).set_greeting("102", "hello.wav", load_wav(tmp_path / "hello.wav"))
        world.main.mailbox_sync.mailbox_changed("102", world.net.now)     # (the admin's change is read within 1 s)
        world.run(3000)
        assert _cached(world, "102") == [("301", "new", "main"), ("101", "new", "main")]   # the copy, current
        assert world.a.voicemail.store.greeting("102")[1] == _store(world).greeting("102")[1]
        first = _store(world).messages("102")[0]["uid"]
        _store(world).save(first)                                         # heard at the main host: the copy follows
        world.main.voicemail.mailbox_changed("102", world.net.now)
        world.run(1000)
        assert _cached(world, "102") == [("101", "new", "main"), ("301", "saved", "main")]

        world.main_away()                                                 # B4
        assert _greeting_heard(world, "101", "102") > 0.8                 # the uploaded greeting, not the default
        _leave_message(world, "101", "102", speak_ms=1000)                # recorded at the remote host meanwhile
        p["102"].phone.start(world.net.now)                               # 102 comes back and listens
        p["102"].flush()
        world.run_until(lambda: p["102"].phone.registered, 5000, "102 registered")
        _reach_voicemail(world, "102", "*97")
        world.run(300)
        # new first (101's at the main host, then 101's recorded here), then the saved one (301's)
        tones = _menu(world, "102", voicemail.PLAY, 2000)
        assert tones.count(TONES["101"]) >= 40 and TONES["301"] not in tones
        _menu(world, "102", voicemail.DELETE, 800)                        # the main host's 101 message: deleted here
        tones = _menu(world, "102", voicemail.PLAY, 2000)                 # now the one recorded here
        assert tones.count(TONES["101"]) >= 40
        _menu(world, "102", voicemail.SAVE, 800)
        tones = _menu(world, "102", voicemail.NEXT, 2000)                 # then 301's
        assert tones.count(TONES["301"]) >= 40 and TONES["101"] not in tones
        _menu(world, "102", voicemail.DELETE, 800)                        # deleted here too
        world.hangup("102")
        local = world.a.voicemail.store
        # heard (saved), deleted; deleted: the main host's messages. The one recorded here goes up as it is
        assert [op for _id, _uid, op in local.pending_changes()] == ["save", "delete", "delete"]
        assert p["102"].phone.messages == 0                               # message waiting from the remote host

        attach_host(world.net, world.main, MAIN)                          # the main host is back
        world.run_until(lambda: world.a.login.state == UP and not local.pending_changes()
                        and not local.pending_upload(), 30000, "changes and message sent")
        world.run(2000)
        left = _store(world).messages("102")
        assert [(m["caller"], m["state"], m["origin"]) for m in left] == [("101", "saved", "site-a")], left
        assert world.main.stats.counters.get("mailbox changes applied") == 3
        assert _cached(world, "102") == [("101", "saved", "site-a")]       # the copy as the main host has it
        # the same changes again (a "done" lost): applied no more, and the message is not stored twice
        local.db.execute("INSERT INTO changes (uid, op) VALUES (?, 'delete')", (first,))
        local.db.execute("UPDATE messages SET uploaded = 0")
        world.restart_remote()
        world.run_until(lambda: not world.a.voicemail.store.pending_changes()
                        and not world.a.voicemail.store.pending_upload(), 30000, "sent again")
        assert world.main.stats.counters.get("mailbox changes applied") == 3
        assert world.main.stats.counters.get("mailbox changes already done") == 1
        assert len(_store(world).messages("102")) == 1
        assert not world.net.errors
    finally:
        world.close()
