/* upbx.host._fastpath: the main host's relay hot path in C (docs/relay.md).
 *
 * The pure-Python path (host/switch.py, common/trunk.py, common/crypto_cpython.py) is the
 * reference; this module does the same work on the same Python objects, byte for byte:
 *
 *   trunk_in(switch, frame, link, auth)   verify a trunk frame's tag, replay-check, decrypt every
 *                                         entry and queue it for the other leg, as Switch.trunk_in;
 *                                         None (nothing touched) for anything but the common case
 *   seal_trunk(auth, index, entries, buf) common.trunk.seal_trunk: encrypt, pack, tag
 *   seal_trunks(auth, index, entries, mtu) Switch._seal_trunks: as many frames as the MTU needs
 *   relay_batch(core, batch, start, now)  HostCore.receive_datagram for the trunk frames trunk_in takes
 *   recv_batch(fd, count)                 recvmmsg: [(bytearray, (host, port))]
 *   send_batch(fd, items)                 sendmmsg with IP_TOS per datagram: (sent, errno)
 *
 * AES-128-CTR and HMAC-SHA256 come from OpenSSL's libcrypto. A key's OpenSSL state is made once
 * and kept on its Python key object (HmacKey, CounterMode) as the attribute `_fast`.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED   /* SHA256_Init & co: the HMAC keeps its padded-key states */
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define TRUNK_HEADER 3
#define ENTRY_HEADER 4
#define MEDIA_TAG 4
#define VOICE_BYTES 160
#define CN_BYTES 1
#define REPLAY_SIZE 1024
#define MAX_ENTRIES 512
#define BATCH 64

static long CONNECTED = 5, RINGBACK = 2;   /* common.call states, set by configure() */

static PyObject *s_fast, *s_key, *s_legs, *s_stats, *s_relayed, *s_trunks, *s_link, *s_media, *s_replay,
    *s_highest, *s_seen, *s_call, *s_a, *s_b, *s_state, *s_held_by, *s_fanout, *s_conference, *s_moh_last, *s_direct, *s_trunked,
    *s_ts_shift, *s_ts_out, *s_frames, *s_count, *s_drop, *s_recv_ctr, *s_send_ctr, *s_role, *s_received,
    *s_rejected, *s_sent, *s_peer_call_no, *s_jump_ok, *s_trunks_in, *s_media_in, *s_media_rejected;

/* --- keys ------------------------------------------------------------------------------------ */

typedef struct { SHA256_CTX inner, outer; } hmac_key;

static void free_hmac(PyObject *capsule) { PyMem_Free(PyCapsule_GetPointer(capsule, "upbx.hmac")); }
static void free_aes(PyObject *capsule) { EVP_CIPHER_CTX_free(PyCapsule_GetPointer(capsule, "upbx.aes")); }

static PyObject *key_bytes(PyObject *obj) {
    PyObject *key = PyObject_GetAttr(obj, s_key);
    if (key != NULL && !PyBytes_Check(key)) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_TypeError, "key object's .key is not bytes");
        return NULL;
    }
    return key;
}

/* The HMAC-SHA256 states after the padded key blocks of an HmacKey (made once, kept on it). */
static hmac_key *get_hmac(PyObject *obj) {
    PyObject *capsule = PyObject_GetAttr(obj, s_fast);
    if (capsule != NULL) {
        hmac_key *h = PyCapsule_GetPointer(capsule, "upbx.hmac");
        Py_DECREF(capsule);
        return h;
    }
    PyErr_Clear();
    PyObject *key = key_bytes(obj);
    if (key == NULL) return NULL;
    unsigned char block[64] = {0}, pad[64];
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    if (n > 64) SHA256((unsigned char *)PyBytes_AS_STRING(key), n, block);
    else memcpy(block, PyBytes_AS_STRING(key), n);
    Py_DECREF(key);
    hmac_key *h = PyMem_Malloc(sizeof(hmac_key));
    if (h == NULL) return (hmac_key *)PyErr_NoMemory();
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&h->inner);
    SHA256_Update(&h->inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&h->outer);
    SHA256_Update(&h->outer, pad, 64);
    capsule = PyCapsule_New(h, "upbx.hmac", free_hmac);
    if (capsule == NULL) { PyMem_Free(h); return NULL; }
    int r = PyObject_SetAttr(obj, s_fast, capsule);
    Py_DECREF(capsule);
    return r < 0 ? NULL : h;
}

/* HMAC over prefix || msg into out (32 bytes). */
static void hmac2(const hmac_key *h, const unsigned char *prefix, size_t p, const unsigned char *msg, size_t n,
                  unsigned char *out) {
    SHA256_CTX c = h->inner;
    unsigned char inner[32];
    SHA256_Update(&c, prefix, p);
    SHA256_Update(&c, msg, n);
    SHA256_Final(inner, &c);
    c = h->outer;
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
}

/* An AES-128-CTR context keyed with a CounterMode's key (made once, kept on it). */
static EVP_CIPHER_CTX *get_aes(PyObject *obj) {
    PyObject *capsule = PyObject_GetAttr(obj, s_fast);
    if (capsule != NULL) {
        EVP_CIPHER_CTX *ctx = PyCapsule_GetPointer(capsule, "upbx.aes");
        Py_DECREF(capsule);
        return ctx;
    }
    PyErr_Clear();
    PyObject *key = key_bytes(obj);
    if (key == NULL) return NULL;
    if (PyBytes_GET_SIZE(key) != 16) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_ValueError, "counter-mode key is not 16 bytes");
        return NULL;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || !EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL,
                                           (unsigned char *)PyBytes_AS_STRING(key), NULL)) {
        Py_DECREF(key);
        EVP_CIPHER_CTX_free(ctx);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: AES-128-CTR unavailable");
        return NULL;
    }
    Py_DECREF(key);
    capsule = PyCapsule_New(ctx, "upbx.aes", free_aes);
    if (capsule == NULL) { EVP_CIPHER_CTX_free(ctx); return NULL; }
    int r = PyObject_SetAttr(obj, s_fast, capsule);
    Py_DECREF(capsule);
    return r < 0 ? NULL : ctx;
}

/* keystream block i = AES(nonce12 || be32(i)), i from 0: OpenSSL's CTR with IV nonce12 || 0 */
static int ctr(EVP_CIPHER_CTX *ctx, const unsigned char nonce[12], const unsigned char *in, unsigned char *out, int n) {
    unsigned char iv[16] = {0};
    int len;
    memcpy(iv, nonce, 12);
    if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) || !EVP_EncryptUpdate(ctx, out, &len, in, n)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: AES-128-CTR failed");
        return -1;
    }
    return 0;
}

static void media_nonce(unsigned char nonce[12], int role, long long ts) {
    nonce[0] = 1;  /* domain: media */
    nonce[1] = (unsigned char)role;
    nonce[2] = nonce[3] = 0;
    for (int i = 0; i < 8; i++) nonce[11 - i] = (unsigned char)(((unsigned long long)ts >> (8 * i)) & 0xFF);
}

static void put_ts64(unsigned char *p, long long ts) {
    for (int i = 0; i < 8; i++) p[7 - i] = (unsigned char)(((unsigned long long)ts >> (8 * i)) & 0xFF);
}

/* --- small helpers on Python objects --------------------------------------------------------- */

static int get_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int set_ll(PyObject *obj, PyObject *name, long long value) {
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL) return -1;
    int r = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return r;
}

static int add_ll(PyObject *obj, PyObject *name, long long n) {
    long long v;
    if (get_ll(obj, name, &v) < 0) return -1;
    return set_ll(obj, name, v + n);
}

static int call_stats(PyObject *stats, PyObject *method, PyObject *what, long long n) {
    PyObject *r = n < 0 ? PyObject_CallMethodOneArg(stats, method, what)
                        : PyObject_CallMethod(stats, PyUnicode_AsUTF8(method), "OL", what, n);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static long long extend16(long long highest, long value) {
    if (highest < 0) return value;
    long long base = highest & ~0xFFFFLL;
    long long candidate = base | value;
    if (candidate - highest > 0x8000 && candidate >= 0x10000) candidate -= 0x10000;
    else if (highest - candidate > 0x8000) candidate += 0x10000;
    return candidate;
}

/* ReplayWindow.check / .mark on the window's own state (highest, _seen): one state for both paths */
static int replay_new(long long highest, const unsigned char *seen, long long ts) {
    if (ts > highest) return 1;
    if (highest - ts >= REPLAY_SIZE) return 0;
    long slot = (long)(ts % REPLAY_SIZE);
    return !(seen[slot >> 3] & (1 << (slot & 7)));
}

static void clear_slots(unsigned char *seen, long a, long b) {
    for (long s = a; s < b; s++) seen[s >> 3] &= (unsigned char)~(1 << (s & 7));
}

static void replay_mark(long long *highest, unsigned char *seen, long long ts) {
    if (ts > *highest) {
        long long gap = ts - *highest;
        if (gap >= REPLAY_SIZE) memset(seen, 0, REPLAY_SIZE >> 3);
        else if (gap > 1) {
            long a = (long)(((*highest + 1) % REPLAY_SIZE + REPLAY_SIZE) % REPLAY_SIZE), b = (long)(ts % REPLAY_SIZE);
            if (a < b) clear_slots(seen, a, b);
            else { clear_slots(seen, a, REPLAY_SIZE); clear_slots(seen, 0, b); }
        }
        *highest = ts;
    }
    long slot = (long)(ts % REPLAY_SIZE);
    seen[slot >> 3] |= (unsigned char)(1 << (slot & 7));
}

/* --- trunk_in -------------------------------------------------------------------------------- */

typedef struct {
    long call_no, ts16;
    Py_ssize_t start, end;
    long long ts;
    PyObject *leg, *media, *replay, *call, *out, *out_link;   /* borrowed through `hold` */
    int i;                                                    /* 0: towards call.a, 1: call.b */
} entry_t;

/* Everything an entry needs, or 0 when it is not the common case (the Python path takes the frame). */
static int prepare(entry_t *e, PyObject *legs, PyObject *link, PyObject *hold) {
    PyObject *key = PyLong_FromLong(e->call_no), *v;
    if (key == NULL) return -1;
    e->leg = PyDict_GetItemWithError(legs, key);
    Py_DECREF(key);
    if (e->leg == NULL) return PyErr_Occurred() ? -1 : 0;
#define HOLD(dst, obj, name) do { dst = PyObject_GetAttr(obj, name); if (dst == NULL) return -1; \
        if (PyList_Append(hold, dst) < 0) { Py_DECREF(dst); return -1; } Py_DECREF(dst); } while (0)
    HOLD(v, e->leg, s_link);
    if (v != link) return 0;
    HOLD(e->media, e->leg, s_media);
    HOLD(e->replay, e->media, s_replay);
    long long highest;
    if (get_ll(e->replay, s_highest, &highest) < 0) return -1;
    e->ts = extend16(highest, e->ts16);
    if (highest >= 0 && e->ts - highest > REPLAY_SIZE) return 0;   /* a far jump: jump_ok's rule */
    HOLD(e->call, e->leg, s_call);
    PyObject *a, *b;
    HOLD(a, e->call, s_a);
    HOLD(b, e->call, s_b);
    if (b == Py_None) return 0;
    long long state;
    if (get_ll(b, s_state, &state) < 0) return -1;
    if (state != CONNECTED && state != RINGBACK) return 0;
    e->out = (a == e->leg) ? b : a;
    if (e->out == Py_None) return 0;
    e->i = (e->out == a) ? 0 : 1;
    HOLD(v, e->out, s_peer_call_no);
    if (v == Py_None) return 0;
    HOLD(v, e->call, s_held_by);
    if (v != Py_None) return 0;
    HOLD(v, e->call, s_fanout);          /* a page: copied to every paged phone (Switch._page) */
    if (v != Py_None) return 0;
    HOLD(v, e->call, s_conference);      /* a conference: mixed at this host (host/conference.py) */
    if (v != Py_None) return 0;
    HOLD(v, e->call, s_moh_last);
    if (!PyList_Check(v) || PyList_GET_SIZE(v) != 2 || PyList_GET_ITEM(v, e->i) != Py_None) return 0;
    HOLD(v, e->call, s_ts_shift);
    if (!PyList_Check(v) || PyList_GET_SIZE(v) != 2 || !PyLong_Check(PyList_GET_ITEM(v, e->i))) return 0;
    HOLD(v, e->call, s_ts_out);
    if (!PyList_Check(v) || PyList_GET_SIZE(v) != 2 || !PyLong_Check(PyList_GET_ITEM(v, e->i))) return 0;
    HOLD(v, e->out, s_direct);
    if (v != Py_None) return 0;
    HOLD(e->out_link, e->out, s_link);
    HOLD(v, e->out_link, s_trunked);
    if (v != Py_True) return 0;
#undef HOLD
    return 1;
}

static PyObject *trunk_in_impl(PyObject *sw, PyObject *frame_obj, PyObject *link, PyObject *auth) {
    Py_buffer frame;
    if (PyObject_GetBuffer(frame_obj, &frame, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *d = frame.buf;
    Py_ssize_t n = frame.len;
    PyObject *result = NULL, *hold = NULL, *legs = NULL, *stats = NULL, *relayed = NULL, *trunks = NULL;
    entry_t entries[MAX_ENTRIES];
    int count = 0;
    /* the frame: anything malformed is the Python path's (it raises the DecodeError the core counts) */
    if (n < TRUNK_HEADER + ENTRY_HEADER + CN_BYTES + MEDIA_TAG || (d[0] & 0xC0) != 0xC0) goto defer;
    Py_ssize_t end = n - MEDIA_TAG, off = TRUNK_HEADER;
    while (off < end) {
        if (off + ENTRY_HEADER > end || count == MAX_ENTRIES) goto defer;
        entry_t *e = &entries[count++];
        e->call_no = ((d[off] & 0x7F) << 8) | d[off + 1];
        if (e->call_no == 0) goto defer;
        e->ts16 = (d[off + 2] << 8) | d[off + 3];
        e->start = off + ENTRY_HEADER;
        e->end = e->start + ((d[off] & 0x80) ? CN_BYTES : VOICE_BYTES);
        if (e->end > end) goto defer;
        off = e->end;
    }
    hold = PyList_New(0);
    if (hold == NULL) goto done;
    if ((legs = PyObject_GetAttr(sw, s_legs)) == NULL) goto done;
    for (int k = 0; k < count; k++) {
        int r = prepare(&entries[k], legs, link, hold);
        if (r < 0) goto done;
        if (r == 0) goto defer;
    }
    /* the trunk's tag: the session key over every entry's 64-bit timestamp, then the frame */
    hmac_key *h = get_hmac(auth);
    if (h == NULL) goto done;
    unsigned char stamps[8 * MAX_ENTRIES], tag[32];
    for (int k = 0; k < count; k++) put_ts64(stamps + 8 * k, entries[k].ts);
    hmac2(h, stamps, 8 * (size_t)count, d, (size_t)end, tag);
    if (CRYPTO_memcmp(tag, d + end, MEDIA_TAG) != 0) goto defer;   /* forged: dropped and counted there */
    if ((stats = PyObject_GetAttr(sw, s_stats)) == NULL || (relayed = PyObject_GetAttr(sw, s_relayed)) == NULL ||
        (trunks = PyObject_GetAttr(sw, s_trunks)) == NULL)
        goto done;
    if (call_stats(stats, s_count, s_trunks_in, -1) < 0) goto done;
    long opened = 0;
    unsigned char nonce[12], plain[VOICE_BYTES];
    for (int k = 0; k < count; k++) {
        entry_t *e = &entries[k];
        long long highest, role;
        if (get_ll(e->replay, s_highest, &highest) < 0) goto done;
        PyObject *seen_obj = PyObject_GetAttr(e->replay, s_seen);
        if (seen_obj == NULL) goto done;
        if (!PyByteArray_Check(seen_obj) || PyByteArray_GET_SIZE(seen_obj) != REPLAY_SIZE >> 3) {
            Py_DECREF(seen_obj);
            PyErr_SetString(PyExc_TypeError, "ReplayWindow._seen is not a 128-byte bytearray");
            goto done;
        }
        unsigned char *seen = (unsigned char *)PyByteArray_AS_STRING(seen_obj);
        int fresh = replay_new(highest, seen, e->ts);
        if (fresh && highest >= 0 && e->ts - highest > REPLAY_SIZE) {   /* an earlier entry moved the window */
            PyObject *number = PyLong_FromLongLong(e->ts);
            PyObject *ok = number ? PyObject_CallMethodOneArg(e->replay, s_jump_ok, number) : NULL;
            Py_XDECREF(number);
            if (ok == NULL) { Py_DECREF(seen_obj); goto done; }
            fresh = PyObject_IsTrue(ok);
            Py_DECREF(ok);
        }
        if (!fresh) {
            Py_DECREF(seen_obj);
            if (add_ll(e->media, s_rejected, 1) < 0 || call_stats(stats, s_drop, s_media_rejected, -1) < 0) goto done;
            continue;
        }
        replay_mark(&highest, seen, e->ts);
        Py_DECREF(seen_obj);
        if (set_ll(e->replay, s_highest, highest) < 0) goto done;
        /* decrypt with this leg's receiving key */
        PyObject *ctr_obj = PyObject_GetAttr(e->media, s_recv_ctr);
        if (ctr_obj == NULL) goto done;
        EVP_CIPHER_CTX *ctx = get_aes(ctr_obj);
        Py_DECREF(ctr_obj);
        if (ctx == NULL || get_ll(e->media, s_role, &role) < 0) goto done;
        media_nonce(nonce, (int)(1 - role), e->ts);
        int len = (int)(e->end - e->start);
        if (ctr(ctx, nonce, d + e->start, plain, len) < 0) goto done;
        if (add_ll(e->media, s_received, 1) < 0) goto done;
        opened++;
        /* Switch.forward for the common case prepare() checked: shift, note the last stamp, queue */
        PyObject *shift = PyObject_GetAttr(e->call, s_ts_shift), *ts_out = PyObject_GetAttr(e->call, s_ts_out);
        if (shift == NULL || ts_out == NULL) { Py_XDECREF(shift); Py_XDECREF(ts_out); goto done; }
        long long ts = e->ts + PyLong_AsLongLong(PyList_GET_ITEM(shift, e->i));
        long long last = PyLong_AsLongLong(PyList_GET_ITEM(ts_out, e->i));
        Py_DECREF(shift);
        if (PyErr_Occurred()) { Py_DECREF(ts_out); goto done; }
        if (ts > last) {
            PyObject *v = PyLong_FromLongLong(ts);
            if (v == NULL || PyList_SetItem(ts_out, e->i, v) < 0) { Py_DECREF(ts_out); goto done; }
        }
        Py_DECREF(ts_out);
        if (add_ll(e->call, s_frames, 1) < 0) goto done;
        PyObject *out_media = PyObject_GetAttr(e->out, s_media);
        if (out_media == NULL) goto done;
        PyObject *item = Py_BuildValue("(NLy#)", out_media, ts, (const char *)plain, (Py_ssize_t)len);
        if (item == NULL) goto done;
        PyObject *queue = PyDict_GetItemWithError(trunks, e->out_link);
        if (queue == NULL) {
            if (PyErr_Occurred() || (queue = PyList_New(0)) == NULL) { Py_DECREF(item); goto done; }
            int r = PyDict_SetItem(trunks, e->out_link, queue);
            Py_DECREF(queue);
            if (r < 0) { Py_DECREF(item); goto done; }
        }
        int r = PyList_Append(queue, item);
        Py_DECREF(item);
        if (r < 0 || PySet_Add(relayed, e->out_link) < 0) goto done;
    }
    if (call_stats(stats, s_count, s_media_in, opened) < 0) goto done;
    result = PyBool_FromLong(opened > 0);
    goto done;
defer:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(hold);
    Py_XDECREF(legs);
    Py_XDECREF(stats);
    Py_XDECREF(relayed);
    Py_XDECREF(trunks);
    PyBuffer_Release(&frame);
    return result;
}

static PyObject *trunk_in(PyObject *self, PyObject *args) {
    PyObject *sw, *frame_obj, *link, *auth;
    if (!PyArg_ParseTuple(args, "OOOO", &sw, &frame_obj, &link, &auth)) return NULL;
    return trunk_in_impl(sw, frame_obj, link, auth);
}

/* --- relay_batch: HostCore.receive_datagram for trunk frames the fast path takes -------------- */

static unsigned long long relayed_datagrams;   /* datagrams relay_batch took (the daemon's status shows it) */

static PyObject *taken(PyObject *self, PyObject *unused) { return PyLong_FromUnsignedLongLong(relayed_datagrams); }

static PyObject *s_trunk_route, *s_meter, *s_add, *s_touch, *s_now, *s_switch, *s_datagrams_in,
    *s_bytes_in;

/* The pending exception as one object, cleared (PyErr_GetRaisedException from Python 3.12 on). */
static PyObject *fetch_error(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* relay_batch(core, batch, start, now) -> (next, error)
 *
 * Takes batch[start:] ([(data, addr)] from recv_batch) for as long as each datagram is a trunk frame
 * from a peer core.trunk_route(session index) knows ((peer, link, auth), else None) and trunk_in
 * takes it; does for it what core.receive_datagram would (core.now, the counters "datagrams in" and
 * "bytes in", the bandwidth meter, Switch.trunk_in, core._touch when it carried new media). Returns
 * the index of the first datagram it left for receive_datagram, and None; or, when the handling of
 * datagram i raised, (i, the exception): that datagram is spent, as an internal error is. */
static PyObject *relay_batch(PyObject *self, PyObject *args) {
    PyObject *core, *batch, *now;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOnO", &core, &batch, &k, &now)) return NULL;
    if (!PyList_Check(batch)) {
        PyErr_SetString(PyExc_TypeError, "batch must be a list");
        return NULL;
    }
    PyObject *sw = PyObject_GetAttr(core, s_switch), *stats = PyObject_GetAttr(core, s_stats),
             *meter = PyObject_GetAttr(core, s_meter), *touched = PyDict_New(), *routes = PyDict_New(), *error = NULL;
    Py_ssize_t taken = 0, taken_bytes = 0;
    if (sw == NULL || stats == NULL || meter == NULL || touched == NULL || routes == NULL ||
        PyObject_SetAttr(core, s_now, now) < 0)
        goto fail;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(batch, k), *data, *addr;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) break;
        data = PyTuple_GET_ITEM(item, 0);
        addr = PyTuple_GET_ITEM(item, 1);
        if (!PyByteArray_Check(data) || PyByteArray_GET_SIZE(data) < 3) break;
        const unsigned char *d = (unsigned char *)PyByteArray_AS_STRING(data);
        if ((d[0] & 0xC0) != 0xC0) break;
        long session = ((d[0] & 0x3F) << 16) | (d[1] << 8) | d[2];
        /* trunk_route once per session within one call: nothing here logs a host in or out */
        PyObject *key = PyLong_FromLong(session), *route = key ? PyDict_GetItemWithError(routes, key) : NULL;
        if (route != NULL) Py_INCREF(route);
        else if (key != NULL && !PyErr_Occurred()) {
            route = PyObject_CallMethodObjArgs(core, s_trunk_route, key, NULL);
            if (route != NULL && PyDict_SetItem(routes, key, route) < 0) Py_CLEAR(route);
        }
        Py_XDECREF(key);
        if (route == NULL) { error = fetch_error(); break; }
        if (route == Py_None || !PyTuple_Check(route) || PyTuple_GET_SIZE(route) != 3) { Py_DECREF(route); break; }
        PyObject *peer = PyTuple_GET_ITEM(route, 0), *link = PyTuple_GET_ITEM(route, 1);
        PyObject *r = trunk_in_impl(sw, data, link, PyTuple_GET_ITEM(route, 2));
        if (r == NULL) { Py_DECREF(route); error = fetch_error(); break; }
        if (r == Py_None) { Py_DECREF(r); Py_DECREF(route); break; }   /* not the common case: receive_datagram's */
        Py_ssize_t len = PyByteArray_GET_SIZE(data);
        PyObject *len_obj = PyLong_FromSsize_t(len), *x;
        int bad = len_obj == NULL;
        taken++;                 /* "datagrams in" and "bytes in" are counted once, at the end of the call */
        taken_bytes += len;
        if (!bad) {
            x = PyObject_CallMethodObjArgs(meter, s_add, addr, len_obj, Py_False, NULL);
            bad = x == NULL;
            Py_XDECREF(x);
        }
        Py_XDECREF(len_obj);
        if (!bad && r == Py_True) {
            /* peers.touch notes the time and a new address: once per peer and address within one call */
            PyObject *last = PyDict_GetItemWithError(touched, peer);
            int same = last != NULL ? PyObject_RichCompareBool(last, addr, Py_EQ) : 0;
            if (same < 0 || (last == NULL && PyErr_Occurred())) bad = 1;
            else if (!same) {
                x = PyObject_CallMethodObjArgs(core, s_touch, peer, addr, now, NULL);
                bad = x == NULL || PyDict_SetItem(touched, peer, addr) < 0;
                Py_XDECREF(x);
            }
        }
        Py_DECREF(r);
        Py_DECREF(route);
        relayed_datagrams++;
        if (bad) { error = fetch_error(); break; }
    }
    if (taken > 0) {
        PyObject *saved = error, *x;   /* the counts of what was taken, even when the last one raised */
        x = PyObject_CallMethod(stats, "count", "On", s_datagrams_in, taken);
        Py_XDECREF(x);
        PyObject *y = x ? PyObject_CallMethod(stats, "count", "On", s_bytes_in, taken_bytes) : NULL;
        Py_XDECREF(y);
        if (y == NULL && saved == NULL) error = fetch_error();
        else PyErr_Clear();
    }
    Py_DECREF(sw);
    Py_DECREF(stats);
    Py_DECREF(meter);
    Py_DECREF(touched);
    Py_DECREF(routes);
    return Py_BuildValue("(nN)", k, error ? error : Py_NewRef(Py_None));
fail:
    Py_XDECREF(routes);
    Py_XDECREF(sw);
    Py_XDECREF(stats);
    Py_XDECREF(meter);
    Py_XDECREF(touched);
    return NULL;
}

/* --- seal_trunk ------------------------------------------------------------------------------ */

/* Seal items[first:last] of seq (each (leg, ts, payload)) into out (cap bytes): the frame's length, or -1. */
static Py_ssize_t seal_into(hmac_key *h, unsigned long index, PyObject *seq, Py_ssize_t first, Py_ssize_t last,
                            unsigned char *out, Py_ssize_t cap, unsigned char *stamps) {
    out[0] = 0xC0 | ((index >> 16) & 0x3F);
    out[1] = (index >> 8) & 0xFF;
    out[2] = index & 0xFF;
    Py_ssize_t off = TRUNK_HEADER;
    for (Py_ssize_t k = first; k < last; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, k), *leg, *payload;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "an entry is (leg, ts, payload)");
            return -1;
        }
        leg = PyTuple_GET_ITEM(item, 0);
        payload = PyTuple_GET_ITEM(item, 2);
        long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 1)), peer, role;
        if (PyErr_Occurred()) return -1;
        Py_buffer p;
        if (PyObject_GetBuffer(payload, &p, PyBUF_SIMPLE) < 0) return -1;
        if (off + ENTRY_HEADER + p.len + MEDIA_TAG > cap || p.len > VOICE_BYTES) {
            PyBuffer_Release(&p);
            PyErr_SetString(PyExc_ValueError, "trunk entries do not fit the buffer");
            return -1;
        }
        if (get_ll(leg, s_peer_call_no, &peer) < 0 || get_ll(leg, s_role, &role) < 0) { PyBuffer_Release(&p); return -1; }
        out[off] = ((peer >> 8) & 0x7F) | (p.len == CN_BYTES ? 0x80 : 0);
        out[off + 1] = peer & 0xFF;
        out[off + 2] = (ts >> 8) & 0xFF;
        out[off + 3] = ts & 0xFF;
        off += ENTRY_HEADER;
        PyObject *ctr_obj = PyObject_GetAttr(leg, s_send_ctr);
        EVP_CIPHER_CTX *ctx = ctr_obj ? get_aes(ctr_obj) : NULL;
        Py_XDECREF(ctr_obj);
        unsigned char nonce[12];
        media_nonce(nonce, (int)role, ts);
        int bad = ctx == NULL || ctr(ctx, nonce, p.buf, out + off, (int)p.len) < 0;
        off += p.len;
        PyBuffer_Release(&p);
        if (bad || add_ll(leg, s_sent, 1) < 0) return -1;
        put_ts64(stamps + 8 * (k - first), ts);
    }
    unsigned char tag[32];
    hmac2(h, stamps, 8 * (size_t)(last - first), out, (size_t)off, tag);
    memcpy(out + off, tag, MEDIA_TAG);
    return off + MEDIA_TAG;
}

static PyObject *seal_trunk(PyObject *self, PyObject *args) {
    PyObject *auth, *entries, *buf_obj;
    unsigned long index;
    if (!PyArg_ParseTuple(args, "OkOO", &auth, &index, &entries, &buf_obj)) return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_WRITABLE) < 0) return NULL;
    PyObject *seq = PySequence_Fast(entries, "entries must be a list");
    Py_ssize_t count = seq ? PySequence_Fast_GET_SIZE(seq) : 0;
    unsigned char *stamps = seq ? PyMem_Malloc(8 * (size_t)count + 1) : NULL;
    PyObject *result = NULL;
    hmac_key *h = stamps ? get_hmac(auth) : NULL;
    if (h != NULL) {
        Py_ssize_t n = seal_into(h, index, seq, 0, count, buf.buf, buf.len, stamps);
        PyObject *view = n < 0 ? NULL : PyMemoryView_FromObject(buf_obj);
        if (view != NULL) {
            result = PySequence_GetSlice(view, 0, n);
            Py_DECREF(view);
        }
    }
    PyMem_Free(stamps);
    Py_XDECREF(seq);
    PyBuffer_Release(&buf);
    return result;
}

/* Switch._seal_trunks: entries into as few frames as the MTU allows (at least one entry each), [bytes]. */
static PyObject *seal_trunks(PyObject *self, PyObject *args) {
    PyObject *auth, *entries;
    unsigned long index;
    Py_ssize_t mtu;
    if (!PyArg_ParseTuple(args, "OkOn", &auth, &index, &entries, &mtu)) return NULL;
    PyObject *seq = PySequence_Fast(entries, "entries must be a list");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), i = 0;
    unsigned char *stamps = PyMem_Malloc(8 * (size_t)count + 1);
    static unsigned char out[65536 + 512];
    PyObject *frames = PyList_New(0);
    hmac_key *h = (stamps && frames) ? get_hmac(auth) : NULL;
    if (h == NULL) goto fail;
    while (i < count) {
        Py_ssize_t j = i, size = TRUNK_HEADER + MEDIA_TAG;
        while (j < count) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, j);
            Py_ssize_t n = (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3) ? PyObject_Length(PyTuple_GET_ITEM(item, 2)) : -1;
            if (n < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "an entry is (leg, ts, payload)");
                goto fail;
            }
            size += ENTRY_HEADER + n;
            if (size > mtu && j > i) break;   /* at least one entry per frame, even an oversized one */
            j++;
        }
        Py_ssize_t n = seal_into(h, index, seq, i, j, out, sizeof(out), stamps);
        if (n < 0) goto fail;
        PyObject *frame = PyBytes_FromStringAndSize((char *)out, n);
        if (frame == NULL || PyList_Append(frames, frame) < 0) { Py_XDECREF(frame); goto fail; }
        Py_DECREF(frame);
        i = j;
    }
    PyMem_Free(stamps);
    Py_DECREF(seq);
    return frames;
fail:
    PyMem_Free(stamps);
    Py_DECREF(seq);
    Py_XDECREF(frames);
    return NULL;
}

/* --- batched socket I/O -------------------------------------------------------------------- */

static unsigned char *rx_scratch;   /* BATCH x RX_SIZE, made at the first call */
#define RX_SIZE 65536

static PyObject *recv_batch(PyObject *self, PyObject *args) {
    int fd, want;
    if (!PyArg_ParseTuple(args, "ii", &fd, &want)) return NULL;
    if (want < 1) want = 1;
    if (want > BATCH) want = BATCH;
    if (rx_scratch == NULL && (rx_scratch = PyMem_Malloc((size_t)BATCH * RX_SIZE)) == NULL) return PyErr_NoMemory();
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < want; i++) {
        iov[i].iov_base = rx_scratch + (size_t)i * RX_SIZE;
        iov[i].iov_len = RX_SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
    }
    int got;
    Py_BEGIN_ALLOW_THREADS
    got = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < got; i++) {
        if (addrs[i].sin_family != AF_INET) continue;
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &addrs[i].sin_addr, host, sizeof(host));
        PyObject *item = Py_BuildValue("(N(si))", PyByteArray_FromStringAndSize((char *)iov[i].iov_base, msgs[i].msg_len),
                                       host, ntohs(addrs[i].sin_port));
        if (item == NULL || PyList_Append(list, item) < 0) Py_CLEAR(list);
        Py_XDECREF(item);
    }
    return list;
}

static PyObject *send_batch(PyObject *self, PyObject *args) {
    int fd;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO", &fd, &items)) return NULL;
    PyObject *seq = PySequence_Fast(items, "items");
    if (seq == NULL) return NULL;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq), sent = 0;
    int err = 0;
    while (sent < total && !err) {
        struct mmsghdr msgs[BATCH];
        struct iovec iov[BATCH];
        struct sockaddr_in addrs[BATCH];
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control[BATCH];
        Py_buffer views[BATCH];
        int m = 0, bad = 0;
        memset(msgs, 0, sizeof(msgs));
        for (; m < BATCH && sent + m < total; m++) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, sent + m), *data;
            const char *host;
            int port, tos;
            if (!PyArg_ParseTuple(item, "O(si)i", &data, &host, &port, &tos) ||
                PyObject_GetBuffer(data, &views[m], PyBUF_SIMPLE) < 0) { bad = 1; break; }
            memset(&addrs[m], 0, sizeof(addrs[m]));
            addrs[m].sin_family = AF_INET;
            addrs[m].sin_port = htons(port);
            if (inet_pton(AF_INET, host, &addrs[m].sin_addr) != 1) {
                PyBuffer_Release(&views[m]);
                PyErr_Format(PyExc_ValueError, "not an IPv4 address: %s", host);
                bad = 1;
                break;
            }
            iov[m].iov_base = views[m].buf;
            iov[m].iov_len = views[m].len;
            msgs[m].msg_hdr.msg_iov = &iov[m];
            msgs[m].msg_hdr.msg_iovlen = 1;
            msgs[m].msg_hdr.msg_name = &addrs[m];
            msgs[m].msg_hdr.msg_namelen = sizeof(addrs[m]);
            memset(&control[m], 0, sizeof(control[m]));
            msgs[m].msg_hdr.msg_control = control[m].buf;
            msgs[m].msg_hdr.msg_controllen = sizeof(control[m].buf);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_TOS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &tos, sizeof(int));
        }
        int done = 0;
        if (m > 0) {
            Py_BEGIN_ALLOW_THREADS
            done = sendmmsg(fd, msgs, m, MSG_DONTWAIT);
            Py_END_ALLOW_THREADS
            if (done < 0) { err = errno; done = 0; }
        }
        for (int i = 0; i < m; i++) PyBuffer_Release(&views[i]);
        sent += done;
        if (bad) {
            if (sent == 0 && m == 0) { Py_DECREF(seq); return NULL; }   /* the first item is bad: say why */
            PyErr_Clear();   /* the next call starts at the bad item and raises there */
            break;
        }
        if (done < m && !err) err = EAGAIN;
    }
    Py_DECREF(seq);
    return Py_BuildValue("(ni)", sent, err);
}

static PyObject *configure(PyObject *self, PyObject *args) {
    if (!PyArg_ParseTuple(args, "ll", &CONNECTED, &RINGBACK)) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"trunk_in", trunk_in, METH_VARARGS, "Switch.trunk_in for the common case; None: the Python path's frame"},
    {"seal_trunk", seal_trunk, METH_VARARGS, "common.trunk.seal_trunk"},
    {"seal_trunks", seal_trunks, METH_VARARGS, "seal_trunks(auth, index, entries, mtu): Switch._seal_trunks, [bytes]"},
    {"recv_batch", recv_batch, METH_VARARGS, "recv_batch(fd, most): recvmmsg, [(bytearray, (host, port))]"},
    {"send_batch", send_batch, METH_VARARGS, "sendmmsg of [(data, (host, port), tos)]: (sent, errno)"},
    {"taken", taken, METH_NOARGS, "how many datagrams relay_batch has taken in this process"},
    {"relay_batch", relay_batch, METH_VARARGS, "relay_batch(core, batch, start, now) -> (next, error)"},
    {"configure", configure, METH_VARARGS, "configure(CONNECTED, RINGBACK): common.call's states"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
#define S(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    S(s_fast, "_fast"); S(s_key, "key"); S(s_legs, "legs"); S(s_stats, "stats"); S(s_relayed, "_relayed");
    S(s_trunks, "_trunks"); S(s_link, "link"); S(s_media, "media"); S(s_replay, "replay"); S(s_highest, "highest");
    S(s_seen, "_seen"); S(s_call, "call"); S(s_a, "a"); S(s_b, "b"); S(s_state, "state"); S(s_held_by, "held_by"); S(s_fanout, "fanout"); S(s_conference, "conference");
    S(s_moh_last, "moh_last"); S(s_direct, "direct"); S(s_trunked, "trunked"); S(s_ts_shift, "ts_shift");
    S(s_ts_out, "ts_out"); S(s_frames, "frames"); S(s_count, "count"); S(s_drop, "drop");
    S(s_recv_ctr, "_recv_ctr"); S(s_send_ctr, "_send_ctr"); S(s_role, "role"); S(s_received, "received");
    S(s_rejected, "rejected"); S(s_sent, "sent"); S(s_peer_call_no, "peer_call_no"); S(s_jump_ok, "jump_ok");
    S(s_trunk_route, "trunk_route"); S(s_meter, "meter"); S(s_add, "add"); S(s_touch, "_touch"); S(s_now, "now");
    S(s_switch, "switch"); S(s_datagrams_in, "datagrams in"); S(s_bytes_in, "bytes in");
    S(s_trunks_in, "trunks in"); S(s_media_in, "media in"); S(s_media_rejected, "media rejected");
#undef S
    return PyModule_Create(&module);
}
