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
 *   bench_count(fd, most, kind, ts0, span) the relay bench's receive side: frames of a window counted
 *   bench_send_trunks / bench_send_rtp    the relay bench's send side: sealed (or RTP) and sent, no Python per datagram
 *   Relay                                 a relay table: recvmmsg to sendmmsg for its delegated directions
 *
 * AES-128-CTR (ctr(): counter blocks encrypted with an AES-128-ECB context, XORed in) and HMAC-SHA256 come
 * from OpenSSL's libcrypto. A key's OpenSSL state is made once and kept on its Python key object (HmacKey,
 * CounterMode) as the attribute `_fast`, or in the relay table's direction with the direction.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED   /* SHA256_Init & co: the HMAC keeps its padded-key states */
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <time.h>
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
#define RES_BUCKETS 2001      /* Relay residence histogram: 0 .. 20 ms in 10 us buckets, and above */
#define RES_BUCKET_NS 10000

static long CONNECTED = 5, RINGBACK = 2;   /* common.call states, set by configure() */

static PyObject *s_fast, *s_key, *s_legs, *s_stats, *s_relayed, *s_trunks, *s_link, *s_media, *s_replay,
    *s_highest, *s_seen, *s_call, *s_a, *s_b, *s_state, *s_held_by, *s_fanout, *s_conference, *s_moh_last, *s_direct, *s_trunked,
    *s_ts_shift, *s_ts_out, *s_frames, *s_count, *s_drop, *s_recv_ctr, *s_send_ctr, *s_role, *s_received,
    *s_rejected, *s_sent, *s_peer_call_no, *s_jump_ok, *s_trunks_in, *s_media_in, *s_media_rejected;
static PyObject *s_own_numbers;   /* Switch.own_numbers(link): its legs are keyed (link, call number) */

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

/* An AES-128 block cipher (ECB, no padding) keyed with `key`: ctr() runs the counter mode over it. One context
 * per key, made when the key is installed: a frame then costs one EVP_EncryptUpdate, not a re-initialisation
 * (EVP_EncryptInit_ex with the frame's IV went through OpenSSL 3's parameter handling every frame). */
static EVP_CIPHER_CTX *new_ecb(const unsigned char *key) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || !EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key, NULL) ||
        !EVP_CIPHER_CTX_set_padding(ctx, 0)) {
        EVP_CIPHER_CTX_free(ctx);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: AES-128-ECB unavailable");
        return NULL;
    }
    return ctx;
}

/* The AES-128 context of a CounterMode's key (made once, kept on it). */
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
    EVP_CIPHER_CTX *ctx = new_ecb((unsigned char *)PyBytes_AS_STRING(key));
    Py_DECREF(key);
    if (ctx == NULL) return NULL;
    capsule = PyCapsule_New(ctx, "upbx.aes", free_aes);
    if (capsule == NULL) { EVP_CIPHER_CTX_free(ctx); return NULL; }
    int r = PyObject_SetAttr(obj, s_fast, capsule);
    Py_DECREF(capsule);
    return r < 0 ? NULL : ctx;
}

#define CTR_MAX 256   /* bytes: CounterMode's max_len (a voice frame is 160, 10 blocks) */

/* out = in XOR keystream, keystream block i = AES(nonce12 || be32(i)), i from 0 (docs/protocol.md); ctx is
 * new_ecb's. The frame's counter blocks are encrypted in one call; in and out may be the same buffer. */
static int ctr(EVP_CIPHER_CTX *ctx, const unsigned char nonce[12], const unsigned char *in, unsigned char *out, int n) {
    unsigned char blocks[CTR_MAX], stream[CTR_MAX];
    int count = (n + 15) >> 4, len, k = 0;
    if (n > CTR_MAX) {
        PyErr_SetString(PyExc_ValueError, "payload longer than counter-mode buffer");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        memcpy(blocks + 16 * i, nonce, 12);
        blocks[16 * i + 12] = blocks[16 * i + 13] = 0;   /* be32(i), i < 16 */
        blocks[16 * i + 14] = 0;
        blocks[16 * i + 15] = (unsigned char)i;
    }
    if (count > 0 && (!EVP_EncryptUpdate(ctx, stream, &len, blocks, 16 * count) || len != 16 * count)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: AES-128 failed");
        return -1;
    }
    for (; k + 8 <= n; k += 8) {   /* 8 bytes at a time (memcpy: no alignment assumed) */
        uint64_t x, y;
        memcpy(&x, in + k, 8);
        memcpy(&y, stream + k, 8);
        x ^= y;
        memcpy(out + k, &x, 8);
    }
    for (; k < n; k++) out[k] = in[k] ^ stream[k];
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

/* --- a trunk frame's entries: the one parser of both C paths ------------------------------------ */

typedef struct { long call_no, ts16; Py_ssize_t start, end; } wentry_t;

/* The trunk frame's entries into e (MAX_ENTRIES at most), or -1: malformed, or a call number 0, which the
 * Python path answers (it raises the DecodeError the core counts). */
static int parse_entries(const unsigned char *d, Py_ssize_t n, wentry_t *e) {
    if (n < TRUNK_HEADER + ENTRY_HEADER + CN_BYTES + MEDIA_TAG || (d[0] & 0xC0) != 0xC0) return -1;
    Py_ssize_t end = n - MEDIA_TAG, off = TRUNK_HEADER;
    int count = 0;
    while (off < end) {
        if (off + ENTRY_HEADER > end || count == MAX_ENTRIES) return -1;
        wentry_t *x = &e[count++];
        x->call_no = ((d[off] & 0x7F) << 8) | d[off + 1];
        if (x->call_no == 0) return -1;
        x->ts16 = (d[off + 2] << 8) | d[off + 3];
        x->start = off + ENTRY_HEADER;
        x->end = x->start + ((d[off] & 0x80) ? CN_BYTES : VOICE_BYTES);
        if (x->end > end) return -1;
        off = x->end;
    }
    return count;
}

/* --- trunk_in -------------------------------------------------------------------------------- */

typedef struct {
    long call_no, ts16;
    Py_ssize_t start, end;
    long long ts;
    PyObject *leg, *media, *replay, *call, *out, *out_link;   /* borrowed through `hold` */
    int i;                                                    /* 0: towards call.a, 1: call.b */
} entry_t;

/* Everything an entry needs, or 0 when it is not the common case (the Python path takes the frame). The leg
 * is legs[(link, call number)] when the link numbers its legs alone (own: Switch.own_numbers), else
 * legs[call number]. */
static int prepare(entry_t *e, PyObject *legs, PyObject *link, int own, PyObject *hold) {
    PyObject *number = PyLong_FromLong(e->call_no), *key, *v;
    if (number == NULL) return -1;
    key = own ? PyTuple_Pack(2, link, number) : Py_NewRef(number);
    Py_DECREF(number);
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
    static wentry_t parsed[MAX_ENTRIES];
    /* the frame: anything malformed is the Python path's (it raises the DecodeError the core counts) */
    int count = parse_entries(d, n, parsed);
    if (count < 0) goto defer;
    Py_ssize_t end = n - MEDIA_TAG;
    for (int k = 0; k < count; k++) {
        entries[k].call_no = parsed[k].call_no;
        entries[k].ts16 = parsed[k].ts16;
        entries[k].start = parsed[k].start;
        entries[k].end = parsed[k].end;
    }
    hold = PyList_New(0);
    if (hold == NULL) goto done;
    if ((legs = PyObject_GetAttr(sw, s_legs)) == NULL) goto done;
    PyObject *own_obj = PyObject_CallMethodOneArg(sw, s_own_numbers, link);
    if (own_obj == NULL) goto done;
    int own = PyObject_IsTrue(own_obj);
    Py_DECREF(own_obj);
    if (own < 0) goto done;
    for (int k = 0; k < count; k++) {
        int r = prepare(&entries[k], legs, link, own, hold);
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

/* bench_count(fd, most, kind, ts0, span) -> (datagrams, counted, [bytes]): the relay bench's load generator
 * reading what a relay sent back without a Python object per datagram (tools/bench_net.py). One recvmmsg of
 * up to `most`; counted: kind 0, the entries of upbx trunk frames whose 16-bit stamp is within span of ts0
 * (mod 2^16); kind 1, RTP packets whose 32-bit timestamp is (mod 2^32). Every other datagram comes back as
 * bytes (signalling: the emulated hosts' logins answer it). */
static PyObject *bench_count(PyObject *self, PyObject *args) {
    int fd, want, kind;
    unsigned long long ts0, span;
    if (!PyArg_ParseTuple(args, "iiiKK", &fd, &want, &kind, &ts0, &span)) return NULL;
    if (want < 1) want = 1;
    if (want > BATCH) want = BATCH;
    if (rx_scratch == NULL && (rx_scratch = PyMem_Malloc((size_t)BATCH * RX_SIZE)) == NULL) return PyErr_NoMemory();
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < want; i++) {
        iov[i].iov_base = rx_scratch + (size_t)i * RX_SIZE;
        iov[i].iov_len = RX_SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got, err = 0;
    Py_BEGIN_ALLOW_THREADS
    got = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
    if (got < 0) err = errno;
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) got = 0;
        else { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    }
    unsigned long long counted = 0;
    PyObject *others = PyList_New(0);
    for (int i = 0; others != NULL && i < got; i++) {
        const unsigned char *d = iov[i].iov_base;
        Py_ssize_t n = msgs[i].msg_len;
        if (kind == 0 && n >= TRUNK_HEADER + MEDIA_TAG && (d[0] & 0xC0) == 0xC0) {
            Py_ssize_t off = TRUNK_HEADER, end = n - MEDIA_TAG;
            while (off + ENTRY_HEADER <= end) {
                unsigned long long ts16 = ((unsigned long long)d[off + 2] << 8) | d[off + 3];
                if (((ts16 - ts0) & 0xFFFF) < span) counted++;
                off += ENTRY_HEADER + ((d[off] & 0x80) ? CN_BYTES : VOICE_BYTES);
            }
            continue;
        }
        if (kind == 1 && n >= 12) {
            unsigned long long ts = ((unsigned long long)d[4] << 24) | (d[5] << 16) | (d[6] << 8) | d[7];
            if (((ts - ts0) & 0xFFFFFFFFULL) < span) counted++;
            continue;
        }
        PyObject *item = PyBytes_FromStringAndSize((const char *)d, n);
        if (item == NULL || PyList_Append(others, item) < 0) Py_CLEAR(others);
        Py_XDECREF(item);
    }
    if (others == NULL) return NULL;
    return Py_BuildValue("(iKN)", got, counted, others);
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

/* --- the relay bench's load generator: sealed and sent without a Python object per datagram ------------ */

#define GEN_SLOT 2048
static unsigned char *gen_tx;   /* BATCH x GEN_SLOT, made at the first call */

/* One datagram of a spec into out (GEN_SLOT bytes), its destination in *to (preset to the default):
 * its length, or -1 with an exception set. */
typedef Py_ssize_t (*gen_fill_t)(void *ctx, PyObject *spec, unsigned char *out, struct sockaddr_in *to);

/* The generator's loop: specs[first:last] filled by fill() 64 at a time and sent with sendmmsg to `to`
 * (or where fill() says) -> (sent, errno); stops at the first batch the socket did not take whole. */
static PyObject *gen_run(int fd, PyObject *specs, Py_ssize_t first, Py_ssize_t last, const struct sockaddr_in *to,
                         gen_fill_t fill, void *ctx) {
    if (!PyList_Check(specs) || first < 0 || last > PyList_GET_SIZE(specs)) {
        PyErr_SetString(PyExc_ValueError, "specs: a list with first..last in it");
        return NULL;
    }
    if (gen_tx == NULL && (gen_tx = PyMem_Malloc((size_t)BATCH * GEN_SLOT)) == NULL) return PyErr_NoMemory();
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
    Py_ssize_t k = first, done = 0;
    int err = 0;
    while (k < last && !err) {
        int m = 0, sent = 0;
        memset(msgs, 0, sizeof(msgs));
        for (; m < BATCH && k < last; m++, k++) {
            addrs[m] = *to;
            Py_ssize_t n = fill(ctx, PyList_GET_ITEM(specs, k), gen_tx + (size_t)m * GEN_SLOT, &addrs[m]);
            if (n < 0) return NULL;
            iov[m].iov_base = gen_tx + (size_t)m * GEN_SLOT;
            iov[m].iov_len = (size_t)n;
            msgs[m].msg_hdr.msg_iov = &iov[m];
            msgs[m].msg_hdr.msg_iovlen = 1;
            msgs[m].msg_hdr.msg_name = &addrs[m];
            msgs[m].msg_hdr.msg_namelen = sizeof(addrs[m]);
        }
        while (sent < m) {
            int r;
            Py_BEGIN_ALLOW_THREADS
            r = sendmmsg(fd, msgs + sent, m - sent, MSG_DONTWAIT);
            if (r < 0) err = errno;
            Py_END_ALLOW_THREADS
            if (r <= 0) break;
            sent += r;
        }
        done += sent;
        if (sent < m && !err) err = EAGAIN;
    }
    return Py_BuildValue("(ni)", done, err);
}

static int gen_address(const char *host, int port, struct sockaddr_in *a) {
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
        PyErr_Format(PyExc_ValueError, "not an IPv4 address: %s", host);
        return -1;
    }
    return 0;
}

typedef struct { long long ts; const unsigned char *voice; Py_ssize_t len; } trunk_ctx;

/* A trunk frame of one entry per leg of spec (auth, session index, ((peer call number, role, ctr, base), ...)),
 * sealed as common.trunk.seal_trunk seals it: payload ctx->voice, each entry's stamp ctx->ts - base. */
static Py_ssize_t fill_trunk(void *ctx_, PyObject *spec, unsigned char *f, struct sockaddr_in *to) {
    trunk_ctx *ctx = ctx_;
    PyObject *entries;
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 3 || !PyTuple_Check(entries = PyTuple_GET_ITEM(spec, 2))) {
        PyErr_SetString(PyExc_TypeError, "a spec is (auth, index, ((peer call number, role, ctr, base), ...))");
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(entries);
    if (count < 1 || TRUNK_HEADER + count * (ENTRY_HEADER + ctx->len) + MEDIA_TAG > GEN_SLOT) {
        PyErr_SetString(PyExc_ValueError, "a spec's entries do not fit one datagram");
        return -1;
    }
    hmac_key *h = get_hmac(PyTuple_GET_ITEM(spec, 0));
    unsigned long index = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(spec, 1));
    if (h == NULL || PyErr_Occurred()) return -1;
    unsigned char stamps[8 * MAX_ENTRIES], tag[32], nonce[12];
    f[0] = 0xC0 | ((index >> 16) & 0x3F);
    f[1] = (index >> 8) & 0xFF;
    f[2] = index & 0xFF;
    Py_ssize_t off = TRUNK_HEADER;
    for (Py_ssize_t e = 0; e < count; e++) {
        PyObject *leg = PyTuple_GET_ITEM(entries, e);
        if (!PyTuple_Check(leg) || PyTuple_GET_SIZE(leg) != 4) {
            PyErr_SetString(PyExc_TypeError, "an entry is (peer call number, role, ctr, base)");
            return -1;
        }
        long peer = PyLong_AsLong(PyTuple_GET_ITEM(leg, 0)), role = PyLong_AsLong(PyTuple_GET_ITEM(leg, 1));
        long long t = ctx->ts - PyLong_AsLongLong(PyTuple_GET_ITEM(leg, 3));
        EVP_CIPHER_CTX *aes = PyErr_Occurred() ? NULL : get_aes(PyTuple_GET_ITEM(leg, 2));
        if (aes == NULL) return -1;
        f[off] = (peer >> 8) & 0x7F;
        f[off + 1] = peer & 0xFF;
        f[off + 2] = (t >> 8) & 0xFF;
        f[off + 3] = t & 0xFF;
        off += ENTRY_HEADER;
        media_nonce(nonce, (int)role, t);
        if (ctr(aes, nonce, ctx->voice, f + off, (int)ctx->len) < 0) return -1;
        off += ctx->len;
        put_ts64(stamps + 8 * e, t);
    }
    hmac2(h, stamps, 8 * (size_t)count, f, (size_t)off, tag);
    memcpy(f + off, tag, MEDIA_TAG);
    return off + MEDIA_TAG;
}

/* bench_send_trunks(fd, specs, ts, voice, (host, port), first, last) -> (sent, errno): the relay bench's sealer
 * (fill_trunk) for specs[first:last], all to one address. */
static PyObject *bench_send_trunks(PyObject *self, PyObject *args) {
    int fd, port;
    PyObject *specs, *result = NULL;
    const char *host;
    Py_buffer voice;
    Py_ssize_t first, last;
    trunk_ctx ctx;
    if (!PyArg_ParseTuple(args, "iOLy*(si)nn", &fd, &specs, &ctx.ts, &voice, &host, &port, &first, &last)) return NULL;
    struct sockaddr_in to;
    ctx.voice = voice.buf;
    ctx.len = voice.len;
    if (voice.len > VOICE_BYTES) PyErr_SetString(PyExc_ValueError, "voice: at most 160 bytes");
    else if (gen_address(host, port, &to) == 0) result = gen_run(fd, specs, first, last, &to, fill_trunk, &ctx);
    PyBuffer_Release(&voice);
    return result;
}

typedef struct { unsigned long seq, ts; const unsigned char *voice; Py_ssize_t len; } rtp_ctx;

/* Plain RTP (version 2, payload type 0) of spec (ssrc, port) to that port. */
static Py_ssize_t fill_rtp(void *ctx_, PyObject *spec, unsigned char *p, struct sockaddr_in *to) {
    rtp_ctx *ctx = ctx_;
    unsigned long ssrc;
    int port;
    if (!PyArg_ParseTuple(spec, "ki", &ssrc, &port)) return -1;
    to->sin_port = htons(port);
    p[0] = 0x80;
    p[1] = 0;
    p[2] = (ctx->seq >> 8) & 0xFF; p[3] = ctx->seq & 0xFF;
    p[4] = (ctx->ts >> 24) & 0xFF; p[5] = (ctx->ts >> 16) & 0xFF; p[6] = (ctx->ts >> 8) & 0xFF; p[7] = ctx->ts & 0xFF;
    p[8] = (ssrc >> 24) & 0xFF; p[9] = (ssrc >> 16) & 0xFF; p[10] = (ssrc >> 8) & 0xFF; p[11] = ssrc & 0xFF;
    memcpy(p + 12, ctx->voice, ctx->len);
    return 12 + ctx->len;
}

/* bench_send_rtp(fd, specs, seq, ts, voice, host, first, last) -> (sent, errno): specs[first:last], each
 * (ssrc, port), as plain RTP (fill_rtp) with the given sequence number, timestamp and payload. */
static PyObject *bench_send_rtp(PyObject *self, PyObject *args) {
    int fd;
    PyObject *specs, *result = NULL;
    const char *host;
    Py_buffer voice;
    Py_ssize_t first, last;
    rtp_ctx ctx;
    if (!PyArg_ParseTuple(args, "iOkky*snn", &fd, &specs, &ctx.seq, &ctx.ts, &voice, &host, &first, &last)) return NULL;
    struct sockaddr_in to;
    ctx.voice = voice.buf;
    ctx.len = voice.len;
    if (voice.len > GEN_SLOT - 12) PyErr_SetString(PyExc_ValueError, "voice: too long for one datagram");
    else if (gen_address(host, 0, &to) == 0) result = gen_run(fd, specs, first, last, &to, fill_rtp, &ctx);
    PyBuffer_Release(&voice);
    return result;
}

/* --- Relay: a relay table in C (docs/relay.md, "The relay table") ----------------------------
 *
 * The directions delegated to one process (a relay worker, or the main host's own: worker 0) as C
 * structures: per host link its trunk keys, peer index and address; per direction (frames received
 * on one leg, relayed on the other) both legs' AES-128-CTR keys and roles, the receiving leg's replay
 * window, the out leg's call number and the direction's timestamp shift. relay(fd) goes from recvmmsg
 * to sendmmsg without Python for every trunk frame whose every entry is a delegated direction; every
 * other datagram is handed back untouched, in order, for the Python path. The table holds the only
 * copy of a delegated replay window: revoke() hands it back (RelayWorkers keeps that rule). */

#include <poll.h>
#include <netinet/udp.h>
#include <stdint.h>

#define MAP_EMPTY 0
#define MAP_TOMB UINT64_MAX
#define UDP_MAX 65536
#define SEND_CHUNK 1024

typedef struct { uint64_t *keys; void **vals; size_t cap, used, live; } map_t;

static size_t hash64(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53ULL; k ^= k >> 33;
    return (size_t)k;
}

static void *map_get(const map_t *m, uint64_t k) {
    if (m->cap == 0) return NULL;
    size_t mask = m->cap - 1, i = hash64(k) & mask;
    while (m->keys[i] != MAP_EMPTY) {
        if (m->keys[i] == k) return m->vals[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static int map_put(map_t *m, uint64_t k, void *v);

static int map_resize(map_t *m, size_t cap) {
    map_t n = {PyMem_Calloc(cap, sizeof(uint64_t)), PyMem_Calloc(cap, sizeof(void *)), cap, 0, 0};
    if (n.keys == NULL || n.vals == NULL) { PyMem_Free(n.keys); PyMem_Free(n.vals); PyErr_NoMemory(); return -1; }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != MAP_EMPTY && m->keys[i] != MAP_TOMB) map_put(&n, m->keys[i], m->vals[i]);
    PyMem_Free(m->keys);
    PyMem_Free(m->vals);
    *m = n;
    return 0;
}

static int map_put(map_t *m, uint64_t k, void *v) {
    if ((m->used + 1) * 2 > m->cap && map_resize(m, m->cap ? (m->live * 4 > m->cap ? m->cap * 2 : m->cap) : 16) < 0)
        return -1;
    size_t mask = m->cap - 1, i = hash64(k) & mask, tomb = SIZE_MAX;
    while (m->keys[i] != MAP_EMPTY) {
        if (m->keys[i] == k) { m->vals[i] = v; return 0; }
        if (m->keys[i] == MAP_TOMB && tomb == SIZE_MAX) tomb = i;
        i = (i + 1) & mask;
    }
    if (tomb != SIZE_MAX) i = tomb;
    else m->used++;
    m->keys[i] = k;
    m->vals[i] = v;
    m->live++;
    return 0;
}

static void *map_del(map_t *m, uint64_t k) {
    if (m->cap == 0) return NULL;
    size_t mask = m->cap - 1, i = hash64(k) & mask;
    while (m->keys[i] != MAP_EMPTY) {
        if (m->keys[i] == k) {
            void *v = m->vals[i];
            m->keys[i] = MAP_TOMB;
            m->live--;
            return v;
        }
        i = (i + 1) & mask;
    }
    return NULL;
}

static void map_free(map_t *m) { PyMem_Free(m->keys); PyMem_Free(m->vals); m->keys = NULL; m->vals = NULL; m->cap = m->used = m->live = 0; }

typedef struct link_s {
    long index;                       /* our session index for the host: the one in its trunk frames */
    unsigned long peer_index;         /* the host's index for us: the one in frames we send it */
    hmac_key recv_auth, send_auth;
    struct sockaddr_in addr;
    PyObject *name, *address;         /* for the reports: bytes out by link name, the meter by address */
    unsigned long long bytes_in, bytes_out, link_bytes_out;   /* since the last report */
    int seen;                         /* authentic new media since the last report */
    int refs;                         /* directions that name it */
    long head, tail;                  /* this batch's staged entries for it (indexes into staged) */
    struct link_s *next_dirty;
} link_t;

typedef struct {
    link_t *recv_link, *out_link;
    EVP_CIPHER_CTX *recv_ctr, *send_ctr;
    int recv_role, out_role;
    long call_no, out_call_no;        /* ours on the receiving leg; the far end's on the out leg */
    long long highest, held, ts_shift, ts_out;
    unsigned char seen[REPLAY_SIZE >> 3];
    unsigned long long received, rejected, sent, frames;   /* since delegated */
} dir_t;

/* a GSO message's control: its DSCP and its segment size, and how many frames it carries */
typedef struct {
    union { char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } c;
    size_t frames, first;
} gso_ctl_t;

typedef struct {
    dir_t *d;
    long long ts;
    long next;
    int len;
    unsigned char plain[VOICE_BYTES];
} staged_t;

typedef struct {
    PyObject_HEAD
    map_t links, dirs;
    Py_ssize_t mtu;
    staged_t *staged;
    size_t nstaged, cap_staged;
    link_t *dirty, **dirty_tail;
    unsigned char *rx, *tx;
    size_t cap_tx;
    struct mmsghdr *txmsg;
    struct iovec *txiov;
    struct sockaddr_in *txaddr;
    size_t cap_txmsg;
    /* UDP GSO (send_gso): one sendmmsg message a run of equal frames to one address; off after the kernel
     * refused it once (no UDP_SEGMENT, a device without checksum offload, a path MTU below a frame) */
    struct mmsghdr *gmsg;
    struct iovec *giov;
    gso_ctl_t *gctl;
    size_t cap_gmsg;
    int no_gso;
    unsigned long long gso_messages, gso_frames;
    unsigned long long taken, c_datagrams_in, c_bytes_in, c_trunks_in, c_media_in, c_media_out, c_bytes_out,
        c_trunks_out, c_rejected, c_socket_errors, c_send_full;
    /* residence: from the kernel's receive stamp of a taken datagram (SO_TIMESTAMPNS, when the socket has it on)
     * to the return of the sendmmsg that sent its frames, in RES_BUCKET_NS buckets (the last: that or more) */
    unsigned int res_hist[RES_BUCKETS];
    unsigned long long res_n, res_max_ns;
    /* ... and the part of it the datagram waited at the socket: its receive stamp to the recvmmsg that read it */
    unsigned int queue_hist[RES_BUCKETS];
    unsigned long long queue_max_ns;
} RelayObject;

static uint64_t dir_key(long session, long call_no) { return ((uint64_t)session << 16) | (uint64_t)call_no; }

static int same_addr(const struct sockaddr_in *a, const struct sockaddr_in *b) {
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

static EVP_CIPHER_CTX *new_ctr(const char *key, Py_ssize_t n) {
    if (n != 16) {
        PyErr_SetString(PyExc_ValueError, "counter-mode key is not 16 bytes");
        return NULL;
    }
    return new_ecb((const unsigned char *)key);
}

static void init_hmac(hmac_key *h, const char *key, Py_ssize_t n) {
    unsigned char block[64] = {0}, pad[64];
    if (n > 64) SHA256((const unsigned char *)key, n, block);
    else memcpy(block, key, n);
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&h->inner);
    SHA256_Update(&h->inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&h->outer);
    SHA256_Update(&h->outer, pad, 64);
}

static void free_dir(dir_t *d) {
    if (d == NULL) return;
    d->recv_link->refs--;
    d->out_link->refs--;
    EVP_CIPHER_CTX_free(d->recv_ctr);
    EVP_CIPHER_CTX_free(d->send_ctr);
    PyMem_Free(d);
}

static void free_link(link_t *l) {
    if (l == NULL) return;
    Py_XDECREF(l->name);
    Py_XDECREF(l->address);
    PyMem_Free(l);
}

static int parse_address(PyObject *address, struct sockaddr_in *out) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(address, "si", &host, &port)) return -1;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) {
        PyErr_Format(PyExc_ValueError, "not an IPv4 address: %s", host);
        return -1;
    }
    return 0;
}

static PyObject *Relay_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Py_ssize_t mtu;
    if (!PyArg_ParseTuple(args, "n", &mtu)) return NULL;
    RelayObject *self = (RelayObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->mtu = mtu;
    self->dirty_tail = &self->dirty;
    return (PyObject *)self;
}

static void Relay_dealloc(RelayObject *self) {
    for (size_t i = 0; i < self->dirs.cap; i++)
        if (self->dirs.keys[i] != MAP_EMPTY && self->dirs.keys[i] != MAP_TOMB) free_dir(self->dirs.vals[i]);
    for (size_t i = 0; i < self->links.cap; i++)
        if (self->links.keys[i] != MAP_EMPTY && self->links.keys[i] != MAP_TOMB) free_link(self->links.vals[i]);
    map_free(&self->dirs);
    map_free(&self->links);
    PyMem_Free(self->staged);
    PyMem_Free(self->rx);
    PyMem_Free(self->tx);
    PyMem_Free(self->txmsg);
    PyMem_Free(self->txiov);
    PyMem_Free(self->txaddr);
    PyMem_Free(self->gmsg);
    PyMem_Free(self->giov);
    PyMem_Free(self->gctl);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* link(index, name, recv_auth_key, send_auth_key, peer_index, (host, port)): a host link, new or updated */
static PyObject *Relay_link(RelayObject *self, PyObject *args) {
    long index;
    unsigned long peer_index;
    PyObject *name, *address;
    const char *rk, *sk;
    Py_ssize_t rn, sn;
    if (!PyArg_ParseTuple(args, "lOy#y#kO", &index, &name, &rk, &rn, &sk, &sn, &peer_index, &address)) return NULL;
    struct sockaddr_in addr;
    if (parse_address(address, &addr) < 0) return NULL;
    link_t *l = map_get(&self->links, (uint64_t)index + 1);
    if (l == NULL) {
        if ((l = PyMem_Calloc(1, sizeof(link_t))) == NULL) return PyErr_NoMemory();
        if (map_put(&self->links, (uint64_t)index + 1, l) < 0) { PyMem_Free(l); return NULL; }
        l->head = l->tail = -1;
    }
    l->index = index;
    l->peer_index = peer_index;
    init_hmac(&l->recv_auth, rk, rn);
    init_hmac(&l->send_auth, sk, sn);
    l->addr = addr;
    Py_INCREF(name);
    Py_XSETREF(l->name, name);
    Py_INCREF(address);
    Py_XSETREF(l->address, address);
    Py_RETURN_NONE;
}

static dir_t *take_dir(RelayObject *self, long session, long call_no) {
    return map_del(&self->dirs, dir_key(session, call_no));
}

/* unlink(index): the link and every direction that names it (the caller took those back first) */
static PyObject *Relay_unlink(RelayObject *self, PyObject *args) {
    long index;
    if (!PyArg_ParseTuple(args, "l", &index)) return NULL;
    link_t *l = map_get(&self->links, (uint64_t)index + 1);
    if (l == NULL) Py_RETURN_NONE;
    for (size_t i = 0; i < self->dirs.cap && l->refs > 0; i++) {
        if (self->dirs.keys[i] == MAP_EMPTY || self->dirs.keys[i] == MAP_TOMB) continue;
        dir_t *d = self->dirs.vals[i];
        if (d->recv_link == l || d->out_link == l) {
            self->dirs.keys[i] = MAP_TOMB;
            self->dirs.live--;
            free_dir(d);
        }
    }
    map_del(&self->links, (uint64_t)index + 1);
    free_link(l);
    Py_RETURN_NONE;
}

/* delegate(recv_index, call_no, recv_key, recv_role, out_index, out_call_no, send_key, out_role,
 *          ts_shift, ts_out, (highest, seen, held)) */
static PyObject *Relay_delegate(RelayObject *self, PyObject *args) {
    long recv_index, call_no, out_index, out_call_no;
    int recv_role, out_role;
    const char *rk, *sk, *seen;
    Py_ssize_t rn, sn, seen_n;
    long long ts_shift, ts_out, highest, held;
    if (!PyArg_ParseTuple(args, "lly#illy#iLL(Ly#L)", &recv_index, &call_no, &rk, &rn, &recv_role, &out_index,
                          &out_call_no, &sk, &sn, &out_role, &ts_shift, &ts_out, &highest, &seen, &seen_n, &held))
        return NULL;
    link_t *rl = map_get(&self->links, (uint64_t)recv_index + 1), *ol = map_get(&self->links, (uint64_t)out_index + 1);
    if (rl == NULL || ol == NULL) {
        PyErr_Format(PyExc_KeyError, "no link %ld", rl == NULL ? recv_index : out_index);
        return NULL;
    }
    if (seen_n != REPLAY_SIZE >> 3 || call_no <= 0 || call_no > 0x7FFF || out_call_no <= 0 || out_call_no > 0x7FFF) {
        PyErr_SetString(PyExc_ValueError, "delegate: a 128-byte window and call numbers 1..32767");
        return NULL;
    }
    dir_t *d = PyMem_Calloc(1, sizeof(dir_t));
    if (d == NULL) return PyErr_NoMemory();
    d->recv_ctr = new_ctr(rk, rn);
    d->send_ctr = d->recv_ctr ? new_ctr(sk, sn) : NULL;
    if (d->send_ctr == NULL) {
        EVP_CIPHER_CTX_free(d->recv_ctr);
        PyMem_Free(d);
        return NULL;
    }
    d->recv_link = rl;
    d->out_link = ol;
    rl->refs++;
    ol->refs++;
    d->recv_role = recv_role;
    d->out_role = out_role;
    d->call_no = call_no;
    d->out_call_no = out_call_no;
    d->highest = highest;
    d->held = held;
    memcpy(d->seen, seen, sizeof(d->seen));
    d->ts_shift = ts_shift;
    d->ts_out = ts_out;
    free_dir(take_dir(self, recv_index, call_no));
    if (map_put(&self->dirs, dir_key(recv_index, call_no), d) < 0) { free_dir(d); return NULL; }
    Py_RETURN_NONE;
}

/* revoke(recv_index, call_no) -> None, or ((highest, seen, held), ts_out, received, rejected, sent, frames) */
static PyObject *Relay_revoke(RelayObject *self, PyObject *args) {
    long recv_index, call_no;
    if (!PyArg_ParseTuple(args, "ll", &recv_index, &call_no)) return NULL;
    dir_t *d = take_dir(self, recv_index, call_no);
    if (d == NULL) Py_RETURN_NONE;
    PyObject *r = Py_BuildValue("((Ly#L)LKKKK)", d->highest, (const char *)d->seen, (Py_ssize_t)sizeof(d->seen),
                                d->held, d->ts_out, d->received, d->rejected, d->sent, d->frames);
    free_dir(d);
    return r;
}

static int stage(RelayObject *self, dir_t *d, long long ts, const unsigned char *in, int len, int *ok) {
    if (self->nstaged == self->cap_staged) {
        size_t cap = self->cap_staged ? self->cap_staged * 2 : 1024;
        staged_t *s = PyMem_Realloc(self->staged, cap * sizeof(staged_t));
        if (s == NULL) { PyErr_NoMemory(); return -1; }
        self->staged = s;
        self->cap_staged = cap;
    }
    long k = (long)self->nstaged++;
    staged_t *s = &self->staged[k];
    unsigned char nonce[12];
    media_nonce(nonce, 1 - d->recv_role, ts);
    if (ctr(d->recv_ctr, nonce, in, s->plain, len) < 0) { self->nstaged--; return -1; }
    *ok = 1;
    d->received++;
    long long out_ts = ts + d->ts_shift;
    if (out_ts > d->ts_out) d->ts_out = out_ts;
    d->frames++;
    s->d = d;
    s->ts = out_ts;
    s->len = len;
    s->next = -1;
    link_t *l = d->out_link;
    if (l->head < 0) {
        l->head = k;
        l->next_dirty = NULL;
        *self->dirty_tail = l;
        self->dirty_tail = &l->next_dirty;
    } else self->staged[l->tail].next = k;
    l->tail = k;
    return 0;
}

/* One datagram: 1 taken (relayed, or every entry a replay), 0 the Python path's (nothing touched), -1 error. */
static int take(RelayObject *self, const unsigned char *d, Py_ssize_t n, const struct sockaddr_in *src) {
    static wentry_t e[MAX_ENTRIES];
    static long long ets[MAX_ENTRIES];   /* each entry's 64-bit stamp */
    static dir_t *edir[MAX_ENTRIES];     /* ... and its direction */
    if (n < 3 || (d[0] & 0xC0) != 0xC0) return 0;
    long session = ((d[0] & 0x3F) << 16) | (d[1] << 8) | d[2];
    link_t *l = map_get(&self->links, (uint64_t)session + 1);
    if (l == NULL || (src != NULL && !same_addr(src, &l->addr))) return 0;   /* a host that moved: B7 is Python's */
    int count = parse_entries(d, n, e);
    if (count < 0) return 0;
    for (int k = 0; k < count; k++) {
        dir_t *x = map_get(&self->dirs, dir_key(session, e[k].call_no));
        if (x == NULL) return 0;
        edir[k] = x;
        ets[k] = extend16(x->highest, e[k].ts16);
        if (x->highest >= 0 && ets[k] - x->highest > REPLAY_SIZE) return 0;   /* a far jump: jump_ok's rule */
    }
    unsigned char stamps[8 * MAX_ENTRIES], tag[32];
    for (int k = 0; k < count; k++) put_ts64(stamps + 8 * k, ets[k]);
    Py_ssize_t end = n - MEDIA_TAG;
    hmac2(&l->recv_auth, stamps, 8 * (size_t)count, d, (size_t)end, tag);
    if (CRYPTO_memcmp(tag, d + end, MEDIA_TAG) != 0) return 0;   /* a forgery: dropped and counted there */
    self->c_datagrams_in++;
    self->c_bytes_in += n;
    l->bytes_in += n + 28;
    self->c_trunks_in++;
    int opened = 0;
    for (int k = 0; k < count; k++) {
        dir_t *x = edir[k];
        /* no far jump here: every stamp is at most REPLAY_SIZE above the highest before the frame */
        if (!replay_new(x->highest, x->seen, ets[k])) {
            x->rejected++;
            self->c_rejected++;
            continue;
        }
        replay_mark(&x->highest, x->seen, ets[k]);
        int ok = 0;
        if (stage(self, x, ets[k], d + e[k].start, (int)(e[k].end - e[k].start), &ok) < 0) return -1;
        opened++;
    }
    self->c_media_in += opened;
    if (opened) l->seen = 1;
    self->taken++;
    return 1;
}

/* Seal what this batch staged, link by link, into trunk frames of at most mtu bytes (one entry at least). */
static int seal_staged(RelayObject *self, size_t *frames_out) {
    size_t need = self->nstaged * (ENTRY_HEADER + VOICE_BYTES + TRUNK_HEADER + MEDIA_TAG) + 16;
    if (need > self->cap_tx) {
        unsigned char *tx = PyMem_Realloc(self->tx, need);
        if (tx == NULL) { PyErr_NoMemory(); return -1; }
        self->tx = tx;
        self->cap_tx = need;
    }
    if (self->nstaged > self->cap_txmsg) {
        size_t cap = self->nstaged;
        struct mmsghdr *m = PyMem_Realloc(self->txmsg, cap * sizeof(*m));
        if (m != NULL) self->txmsg = m;
        struct iovec *v = PyMem_Realloc(self->txiov, cap * sizeof(*v));
        if (v != NULL) self->txiov = v;
        struct sockaddr_in *a = PyMem_Realloc(self->txaddr, cap * sizeof(*a));
        if (a != NULL) self->txaddr = a;
        if (m == NULL || v == NULL || a == NULL) { PyErr_NoMemory(); return -1; }
        self->cap_txmsg = cap;
    }
    unsigned char *out = self->tx, stamps[8 * MAX_ENTRIES];
    size_t frames = 0;
    for (link_t *l = self->dirty; l != NULL; l = l->next_dirty) {
        long k = l->head;
        while (k >= 0) {
            unsigned char *f = out;
            f[0] = 0xC0 | ((l->peer_index >> 16) & 0x3F);
            f[1] = (l->peer_index >> 8) & 0xFF;
            f[2] = l->peer_index & 0xFF;
            Py_ssize_t off = TRUNK_HEADER, size = TRUNK_HEADER + MEDIA_TAG;
            int count = 0;
            while (k >= 0) {
                staged_t *s = &self->staged[k];
                size += ENTRY_HEADER + s->len;
                if ((size > self->mtu && count > 0) || count == MAX_ENTRIES) break;
                dir_t *x = s->d;
                f[off] = ((x->out_call_no >> 8) & 0x7F) | (s->len == CN_BYTES ? 0x80 : 0);
                f[off + 1] = x->out_call_no & 0xFF;
                f[off + 2] = (s->ts >> 8) & 0xFF;
                f[off + 3] = s->ts & 0xFF;
                off += ENTRY_HEADER;
                unsigned char nonce[12];
                media_nonce(nonce, x->out_role, s->ts);
                if (ctr(x->send_ctr, nonce, s->plain, f + off, s->len) < 0) return -1;
                off += s->len;
                x->sent++;
                put_ts64(stamps + 8 * count, s->ts);
                count++;
                k = s->next;
            }
            unsigned char tag[32];
            hmac2(&l->send_auth, stamps, 8 * (size_t)count, f, (size_t)off, tag);
            memcpy(f + off, tag, MEDIA_TAG);
            off += MEDIA_TAG;
            self->txiov[frames].iov_base = f;
            self->txiov[frames].iov_len = off;
            self->txaddr[frames] = l->addr;
            self->c_trunks_out++;
            self->c_media_out++;
            self->c_bytes_out += off;
            l->bytes_out += off + 28;
            l->link_bytes_out += off + 28;
            frames++;
            out += off;
        }
        l->head = l->tail = -1;
    }
    self->dirty = NULL;
    self->dirty_tail = &self->dirty;
    self->nstaged = 0;
    *frames_out = frames;
    return 0;
}

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103        /* linux/udp.h: the segment size of a UDP GSO send (Linux 4.18) */
#endif
#define GSO_MAX_SEGMENTS 64    /* the kernel's UDP_MAX_SEGMENTS was 64 before Linux 6.2 (128 since) */
#define GSO_MAX_BYTES 60000    /* under a 64 KiB IP datagram with its headers */

/* The sealed frames with UDP GSO: a run of frames to one address, all of one size (the last may be shorter),
 * back to back in self->tx, goes as one sendmmsg message with UDP_SEGMENT, and the kernel cuts it into the
 * same datagrams the frames would have been (on loopback at the receiving socket, on a device in its driver
 * or in software): the datagrams on the wire are the same, the per-datagram cost of the way down the stack
 * is paid once a run. Returns how many frames it handled (sent, or counted lost as send_sealed would); fewer
 * than `frames` when the kernel refused GSO (then self->no_gso is set and send_sealed sends the rest). */
static size_t send_gso(RelayObject *self, int fd, size_t frames) {
    if (frames > self->cap_gmsg) {
        struct mmsghdr *m = PyMem_Realloc(self->gmsg, frames * sizeof(*m));
        if (m != NULL) self->gmsg = m;
        struct iovec *v = PyMem_Realloc(self->giov, frames * sizeof(*v));
        if (v != NULL) self->giov = v;
        gso_ctl_t *c = PyMem_Realloc(self->gctl, frames * sizeof(*c));
        if (c != NULL) self->gctl = c;
        if (m == NULL || v == NULL || c == NULL) return 0;   /* send_sealed sends them one a message */
        self->cap_gmsg = frames;
    }
    int tos = 0xB8;   /* DSCP EF, as the Python path's relayed media */
    size_t runs = 0;
    for (size_t i = 0; i < frames;) {
        size_t size = self->txiov[i].iov_len, n = 1, total = size;
        unsigned char *base = self->txiov[i].iov_base;
        while (i + n < frames && n < GSO_MAX_SEGMENTS && same_addr(&self->txaddr[i + n], &self->txaddr[i])
               && self->txiov[i + n].iov_base == base + total && self->txiov[i + n].iov_len <= size
               && total + self->txiov[i + n].iov_len <= GSO_MAX_BYTES) {
            total += self->txiov[i + n].iov_len;
            n++;
            if (self->txiov[i + n - 1].iov_len < size) break;   /* only the last segment may be shorter */
        }
        gso_ctl_t *g = &self->gctl[runs];
        memset(&g->c, 0, sizeof(g->c));
        g->frames = n;
        g->first = i;
        self->giov[runs].iov_base = base;
        self->giov[runs].iov_len = total;
        struct msghdr *h = &self->gmsg[runs].msg_hdr;
        memset(h, 0, sizeof(*h));
        h->msg_iov = &self->giov[runs];
        h->msg_iovlen = 1;
        h->msg_name = &self->txaddr[i];
        h->msg_namelen = sizeof(struct sockaddr_in);
        h->msg_control = g->c.buf;
        h->msg_controllen = n > 1 ? sizeof(g->c.buf) : CMSG_SPACE(sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_TOS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &tos, sizeof(int));
        if (n > 1) {
            uint16_t segment = (uint16_t)size;
            c = CMSG_NXTHDR(h, c);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            memcpy(CMSG_DATA(c), &segment, sizeof(uint16_t));
        }
        runs++;
        i += n;
    }
    size_t sent = 0;   /* messages */
    int waits = 0;
    while (sent < runs) {
        unsigned int m = (unsigned int)(runs - sent > SEND_CHUNK ? SEND_CHUNK : runs - sent);
        int done, err = 0;
        Py_BEGIN_ALLOW_THREADS
        done = sendmmsg(fd, self->gmsg + sent, m, MSG_DONTWAIT);
        if (done < 0) err = errno;
        Py_END_ALLOW_THREADS
        if (done > 0) {
            for (int k = 0; k < done; k++) {
                self->gso_messages++;
                self->gso_frames += self->gctl[sent + k].frames;
            }
            sent += done;
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
            if (++waits > 100) {   /* a send buffer full for a second: what is left is lost */
                self->c_send_full += frames - self->gctl[sent].first;
                return frames;
            }
            struct pollfd p = {fd, POLLOUT, 0};
            Py_BEGIN_ALLOW_THREADS
            poll(&p, 1, 10);
            Py_END_ALLOW_THREADS
            continue;
        }
        if (self->gctl[sent].frames > 1 && (err == EIO || err == EINVAL || err == ENOPROTOOPT || err == EOPNOTSUPP)) {
            self->no_gso = 1;                 /* the kernel or the device cannot: one frame a message from here */
            return self->gctl[sent].first;
        }
        self->c_socket_errors += self->gctl[sent].frames;   /* as sendto's OSError: lost, go on */
        sent++;
    }
    return frames;
}

/* sendmmsg the sealed frames (DSCP EF on each): waits up to 1 s in all for room; errors counted. */
static void send_sealed(RelayObject *self, int fd, size_t frames) {
    static union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    int tos = 0xB8;   /* DSCP EF, as the Python path's relayed media */
    memset(&control, 0, sizeof(control));
    size_t sent = 0;
    int waits = 0;
    if (!self->no_gso && frames > 1) {
        sent = send_gso(self, fd, frames);
        if (sent == frames) return;
    }
    for (size_t i = sent; i < frames; i++) {
        struct msghdr *h = &self->txmsg[i].msg_hdr;
        memset(h, 0, sizeof(*h));
        h->msg_iov = &self->txiov[i];
        h->msg_iovlen = 1;
        h->msg_name = &self->txaddr[i];
        h->msg_namelen = sizeof(struct sockaddr_in);
        h->msg_control = control.buf;
        h->msg_controllen = sizeof(control.buf);
    }
    struct msghdr probe = {0};
    probe.msg_control = control.buf;
    probe.msg_controllen = sizeof(control.buf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&probe);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_TOS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &tos, sizeof(int));
    while (sent < frames) {
        unsigned int m = (unsigned int)(frames - sent > SEND_CHUNK ? SEND_CHUNK : frames - sent);
        int done, err = 0;
        Py_BEGIN_ALLOW_THREADS
        done = sendmmsg(fd, self->txmsg + sent, m, MSG_DONTWAIT);
        if (done < 0) err = errno;
        Py_END_ALLOW_THREADS
        if (done > 0) { sent += done; continue; }
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
            if (++waits > 100) {   /* a send buffer full for a second: what is left is lost */
                self->c_send_full += frames - sent;
                return;
            }
            struct pollfd p = {fd, POLLOUT, 0};
            Py_BEGIN_ALLOW_THREADS
            poll(&p, 1, 10);
            Py_END_ALLOW_THREADS
            continue;
        }
        self->c_socket_errors++;   /* as sendto's OSError: this datagram is lost, go on */
        sent++;
    }
}

/* The SO_TIMESTAMPNS receive time of a datagram (ns, CLOCK_REALTIME), 0 when the socket has no stamps on. */
static long long received_ns(struct msghdr *h) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec t;
            memcpy(&t, CMSG_DATA(c), sizeof(t));
            return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
        }
    }
    return 0;
}

static long long realtime_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void count_ns(unsigned int *hist, unsigned long long *max_ns, long long ns) {
    if (ns < 0) ns = 0;
    long long b = ns / RES_BUCKET_NS;
    hist[b >= RES_BUCKETS ? RES_BUCKETS - 1 : b]++;
    if ((unsigned long long)ns > *max_ns) *max_ns = (unsigned long long)ns;
}

/* The residence of a round's taken datagrams: now (their frames have been sent) minus their receive stamps;
 * and how long each waited at the socket: read_ns (when recvmmsg returned them) minus the stamp. */
static void count_residence(RelayObject *self, const long long *stamp, int got, long long read_ns) {
    long long now = -1;
    for (int i = 0; i < got; i++) {
        if (stamp[i] == 0) continue;
        if (now < 0) now = realtime_ns();
        count_ns(self->res_hist, &self->res_max_ns, now - stamp[i]);
        count_ns(self->queue_hist, &self->queue_max_ns, read_ns - stamp[i]);
        self->res_n++;
    }
}

/* Percentiles of one histogram into out, as name_p50_us ... name_max_us (prefix "" for the residence). */
static int put_percentiles(PyObject *out, const char *prefix, const unsigned int *hist, unsigned long long n,
                           unsigned long long max_ns) {
    static const double ps[4] = {0.50, 0.90, 0.99, 0.999};
    static const char *names[4] = {"p50_us", "p90_us", "p99_us", "p999_us"};
    char key[48];
    unsigned long long seen = 0;
    int k = 0;
    for (int b = 0; b < RES_BUCKETS && n > 0 && k < 4; b++) {
        seen += hist[b];
        while (k < 4 && (double)seen >= ps[k] * (double)n) {
            PyObject *v = PyLong_FromLong((long)(b + 1) * (RES_BUCKET_NS / 1000));
            snprintf(key, sizeof(key), "%s%s", prefix, names[k]);
            if (v == NULL || PyDict_SetItemString(out, key, v) < 0) { Py_XDECREF(v); return -1; }
            Py_DECREF(v);
            k++;
        }
    }
    PyObject *v = PyFloat_FromDouble(max_ns / 1000.0);
    snprintf(key, sizeof(key), "%smax_us", prefix);
    if (v == NULL || PyDict_SetItemString(out, key, v) < 0) { Py_XDECREF(v); return -1; }
    Py_DECREF(v);
    return 0;
}

/* residence() -> {"n", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "queued_p50_us", ... "queued_max_us"}
 * since the last call (then cleared): each percentile is its bucket's upper edge (10 us buckets; 20000 for
 * "20 ms or more"); the queued_ ones are the part spent at the socket before the recvmmsg that read it. */
static PyObject *Relay_residence(RelayObject *self, PyObject *unused) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    PyObject *v = PyLong_FromUnsignedLongLong(self->res_n);
    if (v == NULL || PyDict_SetItemString(out, "n", v) < 0) { Py_XDECREF(v); Py_DECREF(out); return NULL; }
    Py_DECREF(v);
    if (put_percentiles(out, "", self->res_hist, self->res_n, self->res_max_ns) < 0 ||
        put_percentiles(out, "queued_", self->queue_hist, self->res_n, self->queue_max_ns) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    memset(self->res_hist, 0, sizeof(self->res_hist));
    memset(self->queue_hist, 0, sizeof(self->queue_hist));
    self->res_n = self->res_max_ns = self->queue_max_ns = 0;
    return out;
}

static PyObject *untaken_item(const unsigned char *d, Py_ssize_t n, const struct sockaddr_in *a) {
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    return Py_BuildValue("(N(si))", PyByteArray_FromStringAndSize((const char *)d, n), host, ntohs(a->sin_port));
}

/* relay(fd, most) -> [(bytearray, (host, port))]: one recvmmsg of up to `most` datagrams; the ones the
 * table takes are relayed and sent (sendmmsg) before it returns; the rest come back, in order. */
static PyObject *Relay_relay(RelayObject *self, PyObject *args) {
    int fd, want, rounds = 1;
    if (!PyArg_ParseTuple(args, "ii|i", &fd, &want, &rounds)) return NULL;
    if (want < 1) want = 1;
    if (want > BATCH) want = BATCH;
    if (self->rx == NULL && (self->rx = PyMem_Malloc((size_t)BATCH * UDP_MAX)) == NULL) return PyErr_NoMemory();
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
    union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } ctl[BATCH];
    long long stamp[BATCH];   /* the kernel's receive time of a taken datagram (ns), or 0 */
    PyObject *rest = PyList_New(0);
    if (rest == NULL) return NULL;
    for (int round = 0; round < rounds; round++) {
        memset(msgs, 0, sizeof(msgs));
        for (int i = 0; i < want; i++) {
            iov[i].iov_base = self->rx + (size_t)i * UDP_MAX;
            iov[i].iov_len = UDP_MAX;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
            msgs[i].msg_hdr.msg_control = ctl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
        }
        int got, err = 0;
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        if (got < 0) err = errno;
        Py_END_ALLOW_THREADS
        long long read_ns = got > 0 ? realtime_ns() : 0;   /* a vDSO call a round: when they left the socket */
        if (got < 0) {
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) break;
            if (PyList_GET_SIZE(rest) > 0) break;   /* what was read is handed back; the error comes again */
            Py_DECREF(rest);
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        for (int i = 0; i < got; i++) {
            const unsigned char *d = iov[i].iov_base;
            Py_ssize_t n = msgs[i].msg_len;
            if (addrs[i].sin_family != AF_INET) continue;
            int r = take(self, d, n, &addrs[i]);
            stamp[i] = r == 1 ? received_ns(&msgs[i].msg_hdr) : 0;
            PyObject *item = r == 0 ? untaken_item(d, n, &addrs[i]) : NULL;
            if (r < 0 || (r == 0 && (item == NULL || PyList_Append(rest, item) < 0))) {
                Py_XDECREF(item);
                Py_DECREF(rest);
                self->nstaged = 0;
                for (link_t *l = self->dirty; l != NULL; l = l->next_dirty) l->head = l->tail = -1;
                self->dirty = NULL;
                self->dirty_tail = &self->dirty;
                return NULL;
            }
            Py_XDECREF(item);
        }
        size_t frames = 0;
        if (self->nstaged > 0) {
            if (seal_staged(self, &frames) < 0) { Py_DECREF(rest); return NULL; }
            send_sealed(self, fd, frames);
        }
        count_residence(self, stamp, got, read_ns);
        if (got < want) break;
    }
    return rest;
}

/* process([(data, (host, port))]) -> ([(bytes, (host, port))] sealed, [(bytearray, addr)] the rest): relay()
 * without sockets, for the tests that compare the table with the Python path. */
static PyObject *Relay_process(RelayObject *self, PyObject *args) {
    PyObject *items;
    if (!PyArg_ParseTuple(args, "O", &items)) return NULL;
    PyObject *seq = PySequence_Fast(items, "items");
    if (seq == NULL) return NULL;
    PyObject *rest = PyList_New(0), *sent = PyList_New(0);
    if (rest == NULL || sent == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *data, *address;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OO", &data, &address)) goto fail;
        struct sockaddr_in src;
        if (parse_address(address, &src) < 0) goto fail;
        Py_buffer b;
        if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0) goto fail;
        int r = take(self, b.buf, b.len, &src);
        PyObject *item = r == 0 ? untaken_item(b.buf, b.len, &src) : NULL;
        PyBuffer_Release(&b);
        if (r < 0) goto fail;
        if (r == 0 && (item == NULL || PyList_Append(rest, item) < 0)) { Py_XDECREF(item); goto fail; }
        Py_XDECREF(item);
    }
    size_t frames = 0;
    if (self->nstaged > 0 && seal_staged(self, &frames) < 0) goto fail;
    for (size_t i = 0; i < frames; i++) {
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &self->txaddr[i].sin_addr, host, sizeof(host));
        PyObject *item = Py_BuildValue("(y#(si))", (const char *)self->txiov[i].iov_base, (Py_ssize_t)self->txiov[i].iov_len,
                                       host, ntohs(self->txaddr[i].sin_port));
        if (item == NULL || PyList_Append(sent, item) < 0) { Py_XDECREF(item); goto fail; }
        Py_DECREF(item);
    }
    Py_DECREF(seq);
    return Py_BuildValue("(NN)", sent, rest);
fail:
    self->nstaged = 0;
    for (link_t *l = self->dirty; l != NULL; l = l->next_dirty) l->head = l->tail = -1;
    self->dirty = NULL;
    self->dirty_tail = &self->dirty;
    Py_DECREF(seq);
    Py_XDECREF(rest);
    Py_XDECREF(sent);
    return NULL;
}

/* stamps(data) -> {call number: highest} of the delegated directions a trunk frame names, or None */
static PyObject *Relay_stamps(RelayObject *self, PyObject *args) {
    Py_buffer b;
    static wentry_t e[MAX_ENTRIES];
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    const unsigned char *d = b.buf;
    PyObject *out = NULL;
    int count = b.len >= 3 ? parse_entries(d, b.len, e) : -1;
    if (count > 0) {
        long session = ((d[0] & 0x3F) << 16) | (d[1] << 8) | d[2];
        for (int k = 0; k < count; k++) {
            dir_t *x = map_get(&self->dirs, dir_key(session, e[k].call_no));
            if (x == NULL) continue;
            if (out == NULL && (out = PyDict_New()) == NULL) break;
            PyObject *key = PyLong_FromLong(e[k].call_no), *v = PyLong_FromLongLong(x->highest);
            int r = (key && v) ? PyDict_SetItem(out, key, v) : -1;
            Py_XDECREF(key);
            Py_XDECREF(v);
            if (r < 0) { Py_CLEAR(out); break; }
        }
    }
    PyBuffer_Release(&b);
    if (out == NULL && PyErr_Occurred()) return NULL;
    return out ? out : Py_NewRef(Py_None);
}

static int put_count(PyObject *dict, const char *name, unsigned long long *n) {
    if (*n == 0) return 0;
    PyObject *v = PyLong_FromUnsignedLongLong(*n);
    int r = v ? PyDict_SetItemString(dict, name, v) : -1;
    Py_XDECREF(v);
    *n = 0;
    return r;
}

/* report() -> (counters, drops, meter {address: [in, out]}, bytes out by link name, seen {index: address}):
 * what changed since the last report, in the shape of a relay worker's report (RelayWorkers._merge_report). */
static PyObject *Relay_report(RelayObject *self, PyObject *unused) {
    PyObject *counters = PyDict_New(), *drops = PyDict_New(), *meter = PyDict_New(), *by_link = PyDict_New(),
             *seen = PyDict_New();
    if (!counters || !drops || !meter || !by_link || !seen) goto fail;
    if (put_count(counters, "datagrams in", &self->c_datagrams_in) < 0 || put_count(counters, "bytes in", &self->c_bytes_in) < 0 ||
        put_count(counters, "trunks in", &self->c_trunks_in) < 0 || put_count(counters, "media in", &self->c_media_in) < 0 ||
        put_count(counters, "media out", &self->c_media_out) < 0 || put_count(counters, "bytes out", &self->c_bytes_out) < 0 ||
        put_count(counters, "trunks out", &self->c_trunks_out) < 0 ||
        put_count(counters, "socket errors", &self->c_socket_errors) < 0 ||
        put_count(drops, "media rejected", &self->c_rejected) < 0 || put_count(drops, "send queue full", &self->c_send_full) < 0)
        goto fail;
    for (size_t i = 0; i < self->links.cap; i++) {
        if (self->links.keys[i] == MAP_EMPTY || self->links.keys[i] == MAP_TOMB) continue;
        link_t *l = self->links.vals[i];
        if (l->bytes_in || l->bytes_out) {
            PyObject *v = Py_BuildValue("[KK]", l->bytes_in, l->bytes_out);
            if (v == NULL || PyDict_SetItem(meter, l->address, v) < 0) { Py_XDECREF(v); goto fail; }
            Py_DECREF(v);
            l->bytes_in = l->bytes_out = 0;
        }
        if (l->link_bytes_out) {
            PyObject *v = PyLong_FromUnsignedLongLong(l->link_bytes_out), *old = PyDict_GetItemWithError(by_link, l->name);
            if (v != NULL && old != NULL) {   /* two sessions of one name: added */
                PyObject *sum = PyNumber_Add(v, old);
                Py_SETREF(v, sum);
            }
            if (v == NULL || PyDict_SetItem(by_link, l->name, v) < 0) { Py_XDECREF(v); goto fail; }
            Py_DECREF(v);
            l->link_bytes_out = 0;
        }
        if (l->seen) {
            PyObject *k = PyLong_FromLong(l->index);
            if (k == NULL || PyDict_SetItem(seen, k, l->address) < 0) { Py_XDECREF(k); goto fail; }
            Py_DECREF(k);
            l->seen = 0;
        }
    }
    return Py_BuildValue("(sNNNNN)", "report", counters, drops, meter, by_link, seen);
fail:
    Py_XDECREF(counters);
    Py_XDECREF(drops);
    Py_XDECREF(meter);
    Py_XDECREF(by_link);
    Py_XDECREF(seen);
    return NULL;
}

static PyObject *Relay_taken(RelayObject *self, PyObject *unused) { return PyLong_FromUnsignedLongLong(self->taken); }

/* gso() -> (on, messages, frames): whether sends use UDP GSO, and the messages and frames sent that way */
static PyObject *Relay_gso(RelayObject *self, PyObject *unused) {
    return Py_BuildValue("(OKK)", self->no_gso ? Py_False : Py_True, self->gso_messages, self->gso_frames);
}

/* set_gso(on): UDP GSO for the sends (on by default; off: one frame a sendmmsg message, as before) */
static PyObject *Relay_set_gso(RelayObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    self->no_gso = !on;
    Py_RETURN_NONE;
}

static Py_ssize_t Relay_len(RelayObject *self) { return (Py_ssize_t)self->dirs.live; }

static PyObject *Relay_has(RelayObject *self, PyObject *args) {
    long recv_index, call_no;
    if (!PyArg_ParseTuple(args, "ll", &recv_index, &call_no)) return NULL;
    return PyBool_FromLong(map_get(&self->dirs, dir_key(recv_index, call_no)) != NULL);
}

static PyMethodDef Relay_methods[] = {
    {"link", (PyCFunction)Relay_link, METH_VARARGS, "link(index, name, recv_auth_key, send_auth_key, peer_index, (host, port))"},
    {"unlink", (PyCFunction)Relay_unlink, METH_VARARGS, "unlink(index): the link and the directions that name it"},
    {"delegate", (PyCFunction)Relay_delegate, METH_VARARGS,
     "delegate(recv_index, call_no, recv_key, recv_role, out_index, out_call_no, send_key, out_role, ts_shift, ts_out, "
     "(highest, seen, held))"},
    {"revoke", (PyCFunction)Relay_revoke, METH_VARARGS,
     "revoke(recv_index, call_no) -> None or ((highest, seen, held), ts_out, received, rejected, sent, frames)"},
    {"has", (PyCFunction)Relay_has, METH_VARARGS, "has(recv_index, call_no): the direction is delegated here"},
    {"relay", (PyCFunction)Relay_relay, METH_VARARGS, "relay(fd, most, rounds=1) -> the datagrams not taken [(bytearray, addr)]"},
    {"process", (PyCFunction)Relay_process, METH_VARARGS, "process(items) -> (sealed [(bytes, addr)], not taken)"},
    {"stamps", (PyCFunction)Relay_stamps, METH_VARARGS, "stamps(data) -> {call number: highest} or None"},
    {"report", (PyCFunction)Relay_report, METH_NOARGS, "report() -> ('report', counters, drops, meter, bytes out by link, seen)"},
    {"taken", (PyCFunction)Relay_taken, METH_NOARGS, "datagrams this table took"},
    {"gso", (PyCFunction)Relay_gso, METH_NOARGS, "gso() -> (on, messages, frames) of the UDP GSO sends"},
    {"set_gso", (PyCFunction)Relay_set_gso, METH_VARARGS, "set_gso(on): UDP GSO for the sends (default on)"},
    {"residence", (PyCFunction)Relay_residence, METH_NOARGS,
     "residence() -> percentiles (us) of receive stamp to send of the datagrams taken since the last call"},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods Relay_as_sequence = {.sq_length = (lenfunc)Relay_len};

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "upbx.host._fastpath.Relay",
    .tp_basicsize = sizeof(RelayObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Relay(mtu): the delegated directions of one process as a C table (docs/relay.md)",
    .tp_new = Relay_new,
    .tp_dealloc = (destructor)Relay_dealloc,
    .tp_methods = Relay_methods,
    .tp_as_sequence = &Relay_as_sequence,
};

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
    {"bench_count", bench_count, METH_VARARGS,
     "bench_count(fd, most, kind, ts0, span): recvmmsg, (datagrams, frames of the window counted, [other datagrams])"},
    {"taken", taken, METH_NOARGS, "how many datagrams relay_batch has taken in this process"},
    {"bench_send_trunks", bench_send_trunks, METH_VARARGS,
     "bench_send_trunks(fd, specs, ts, voice, (host, port), first, last) -> (sent, errno): the relay bench's sealer"},
    {"bench_send_rtp", bench_send_rtp, METH_VARARGS,
     "bench_send_rtp(fd, specs, seq, ts, voice, host, first, last) -> (sent, errno): the relay bench's RTP sender"},
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
    S(s_own_numbers, "own_numbers");
#undef S
    if (PyType_Ready(&RelayType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RelayType);
    if (PyModule_AddObject(m, "Relay", (PyObject *)&RelayType) < 0) { Py_DECREF(&RelayType); Py_DECREF(m); return NULL; }
#ifndef UPBX_SOURCE_SHA256
#define UPBX_SOURCE_SHA256 ""
#endif
    /* the SHA-256 of the _fastpath.c this was built from (setup.py): fastpath.py refuses a stale build */
    if (PyModule_AddStringConstant(m, "source_sha256", UPBX_SOURCE_SHA256) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
