/* The compiled row differ: a plain C library (no Python headers: any C compiler builds it,
 * Zig's from PyPI included), compiled by the package's own build (setup.py, through
 * syncd/engine/rowdiff/build.py) and loaded with ctypes by syncd/engine/rowdiff/cdiffer.py;
 * syncd/engine/rowdiff/pydiffer.py's pure-Python `PyDiffer` is the specification;
 * tests/unit/test_rowdiff.py holds the two to identical results.
 *
 * A binary COPY stream is framed here without decoding a value: the 19-byte header (and its
 * extension area), then tuples (int16 field count, then per field an int32 length, -1 for NULL,
 * and that many bytes), then the int16 -1 trailer. Chunks arrive cut anywhere: a partial item is
 * carried over to the next chunk.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

#define RD_ABI 2 /* build.py's load() refuses a library of another version */
/* the digest of the rowdiff.c and xxhash.h it was built from (build.py's source_digest(), passed
 * by the build as -DRD_SOURCE=...): load() refuses a library built from other sources */
#ifndef RD_SOURCE
#define RD_SOURCE "unknown"
#endif
#ifdef _WIN32
#define RD_EXPORT __declspec(dllexport)
#else
#define RD_EXPORT __attribute__((visibility("default")))
#endif
#define KEY 16
#define PLACE 6 /* a tid: block (int32), then offset (int16), as binary COPY sends it */
#define NO_PLACE 0xff /* every byte of a place not known: block 0xffffffff is no block */
#define HEADER 19
#define EMPTY 0
#define PRESENT 1
#define DUPLICATE 2
#define MATCHED 3

typedef ptrdiff_t Py_ssize_t; /* the sizes, as in the CPython version this replaced */

static const uint8_t SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};

enum item { NEED_MORE, HEADER_ITEM, TUPLE, TRAILER, BAD };

typedef struct {
    int phase; /* 0: before the header, 1: tuples, 2: after the trailer */
    int fields; /* field count of the first tuple, -1 before it */
    uint8_t *carry;
    Py_ssize_t carry_len, carry_cap;
} Walk;

typedef struct {
    uint8_t *data;
    Py_ssize_t len, cap;
} Out;

typedef struct {
    uint64_t seed;
    int emit;
    int sealed;
    Walk existing, source, locating;
    int existing_mode; /* 0: not started, 1: stored hashes, 2: rows to hash */
    /* the existing rows' keys (and, located, their places), appended, then sealed into the
     * table */
    uint8_t *keys;
    uint8_t *places;
    Py_ssize_t nkeys, keys_cap;
    int located; /* -1 until the first stored tuple: 1 when it came as (ctid, hash) */
    /* open addressing, linear probing, slot = fastrange of the key's first 8 bytes */
    uint8_t *slot_keys;
    uint8_t *slot_state;
    uint8_t *slot_place; /* the place of the row each key came from (NO_PLACE: not known) */
    uint32_t *slot_count; /* emit=0 (verify): copies held per key, matched one by one */
    Py_ssize_t slots;
    Out out; /* what the last rd_feed or rd_finish let through */
    long long unhashed, distinct, duplicated, rows_in, rows_new, rows_matched;
    int emitted_header;
    const char *error;
} Differ;

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int16_t be16(const uint8_t *p) { return (int16_t)(((uint16_t)p[0] << 8) | p[1]); }

/* One item at p: its kind, and its length in *len. */
static enum item parse_item(Walk *w, const uint8_t *p, Py_ssize_t n, Py_ssize_t *len,
                            const char **error) {
    if (w->phase == 0) {
        if (n < HEADER) return NEED_MORE;
        if (memcmp(p, SIGNATURE, 11) != 0) {
            *error = "not a binary COPY stream (bad signature)";
            return BAD;
        }
        uint32_t ext = be32(p + 15);
        if (ext > (1u << 20)) {
            *error = "binary COPY header extension too long";
            return BAD;
        }
        if (n < HEADER + (Py_ssize_t)ext) return NEED_MORE;
        *len = HEADER + (Py_ssize_t)ext;
        return HEADER_ITEM;
    }
    if (w->phase == 2) {
        *error = "data after the binary COPY trailer";
        return BAD;
    }
    if (n < 2) return NEED_MORE;
    int16_t count = be16(p);
    if (count == -1) {
        *len = 2;
        return TRAILER;
    }
    if (count < 0 || (w->fields >= 0 && count != w->fields)) {
        *error = "malformed binary COPY tuple (field count)";
        return BAD;
    }
    Py_ssize_t at = 2;
    for (int i = 0; i < count; i++) {
        if (n - at < 4) return NEED_MORE;
        int32_t size = (int32_t)be32(p + at);
        at += 4;
        if (size == -1) continue;
        if (size < 0) {
            *error = "malformed binary COPY tuple (field length)";
            return BAD;
        }
        if (n - at < size) return NEED_MORE;
        at += size;
    }
    *len = at;
    return TUPLE;
}

static int carry_append(Walk *w, const uint8_t *p, Py_ssize_t n) {
    if (w->carry_len + n > w->carry_cap) {
        Py_ssize_t cap = (w->carry_len + n) * 2;
        uint8_t *grown = realloc(w->carry, cap);
        if (grown == NULL) return -1;
        w->carry = grown;
        w->carry_cap = cap;
    }
    memcpy(w->carry + w->carry_len, p, n);
    w->carry_len += n;
    return 0;
}

static int out_reserve(Out *o, Py_ssize_t more) {
    if (o->len + more <= o->cap) return 0;
    Py_ssize_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + more) cap *= 2;
    uint8_t *grown = realloc(o->data, cap);
    if (grown == NULL) return -1;
    o->data = grown;
    o->cap = cap;
    return 0;
}

static void hash_tuple(uint64_t seed, const uint8_t *p, Py_ssize_t len, uint8_t key[KEY]) {
    XXH128_hash_t h = XXH3_128bits_withSeed(p, (size_t)len, seed);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(key, c.digest, KEY);
}

static Py_ssize_t slot_of(const Differ *d, const uint8_t *key) {
    uint64_t h;
    memcpy(&h, key, 8);
#ifdef __SIZEOF_INT128__
    return (Py_ssize_t)(((unsigned __int128)h * (uint64_t)d->slots) >> 64);
#else
    return (Py_ssize_t)(h % (uint64_t)d->slots);
#endif
}

/* handlers: 0 ok, -1 error (d->error says why) */
static int on_existing(Differ *d, const uint8_t *p, Py_ssize_t len) {
    uint8_t key[KEY];
    const uint8_t *place = NULL;
    if (d->existing_mode == 1) {
        /* the stored hash (uuid), NULL for rows an older syncd landed; located: after the
         * row's place (its ctid) */
        if (d->located < 0) d->located = be16(p) == 2;
        if (d->located) {
            if (len < 2 + 4 + PLACE || be16(p) != 2 || be32(p + 2) != PLACE) {
                d->error = "the stored row places are not tids";
                return -1;
            }
            place = p + 6;
            p += 4 + PLACE; /* the hash field, as if it were alone */
            len -= 4 + PLACE;
        }
        if (len == 6 && (int32_t)be32(p + 2) == -1) {
            d->unhashed++;
            return 0;
        }
        if (len != 2 + 4 + KEY || be32(p + 2) != KEY) {
            d->error = "the stored row hashes are not 16-byte values";
            return -1;
        }
        memcpy(key, p + 6, KEY);
    } else {
        hash_tuple(d->seed, p, len, key);
    }
    if (d->nkeys == d->keys_cap) {
        Py_ssize_t cap = d->keys_cap ? d->keys_cap + d->keys_cap / 2 : 4096;
        uint8_t *grown = realloc(d->keys, (size_t)cap * KEY);
        if (grown == NULL) {
            d->error = "out of memory";
            return -1;
        }
        d->keys = grown;
        if (place != NULL) {
            grown = realloc(d->places, (size_t)cap * PLACE);
            if (grown == NULL) {
                d->error = "out of memory";
                return -1;
            }
            d->places = grown;
        }
        d->keys_cap = cap;
    }
    memcpy(d->keys + d->nkeys * KEY, key, KEY);
    if (place != NULL) memcpy(d->places + d->nkeys * PLACE, place, PLACE);
    d->nkeys++;
    return 0;
}

static int on_source(Differ *d, const uint8_t *p, Py_ssize_t len, Out *out) {
    uint8_t key[KEY];
    hash_tuple(d->seed, p, len, key);
    d->rows_in++;
    if (d->slots) {
        for (Py_ssize_t i = slot_of(d, key);; i = (i + 1 == d->slots) ? 0 : i + 1) {
            uint8_t state = d->slot_state[i];
            if (state == EMPTY) break;
            if (memcmp(d->slot_keys + i * KEY, key, KEY) == 0) {
                if (d->slot_count != NULL) {
                    if (d->slot_count[i] == 0) break;
                    d->slot_count[i]--;
                    d->rows_matched++;
                    return 0;
                }
                if (state == PRESENT) {
                    d->slot_state[i] = MATCHED;
                    d->rows_matched++;
                    return 0;
                }
                break; /* duplicated (rewritten whole) or matched already: a new row */
            }
        }
    }
    d->rows_new++;
    if (!d->emit) return 0;
    if (out_reserve(out, len + 4 + KEY + HEADER) < 0) {
        d->error = "out of memory";
        return -1;
    }
    if (!d->emitted_header) {
        memcpy(out->data + out->len, SIGNATURE, 11);
        memset(out->data + out->len + 11, 0, 8);
        out->len += HEADER;
        d->emitted_header = 1;
    }
    /* the tuple with one more field: its hash, as the uuid column */
    uint16_t count = (uint16_t)(be16(p) + 1);
    uint8_t *o = out->data + out->len;
    o[0] = (uint8_t)(count >> 8);
    o[1] = (uint8_t)count;
    memcpy(o + 2, p + 2, len - 2);
    o += len;
    o[0] = 0;
    o[1] = 0;
    o[2] = 0;
    o[3] = KEY;
    memcpy(o + 4, key, KEY);
    out->len += len + 4 + KEY;
    return 0;
}

static Py_ssize_t find_slot(const Differ *d, const uint8_t *key) {
    if (!d->slots) return -1;
    for (Py_ssize_t i = slot_of(d, key);; i = (i + 1 == d->slots) ? 0 : i + 1) {
        if (d->slot_state[i] == EMPTY) return -1;
        if (memcmp(d->slot_keys + i * KEY, key, KEY) == 0) return i;
    }
}

/* A (ctid, hash) of the stored rows, read after the hashes: the place of that key's row. */
static int on_locate(Differ *d, const uint8_t *p, Py_ssize_t len) {
    if (len < 2 + 4 + PLACE + 4 || be16(p) != 2 || be32(p + 2) != PLACE) {
        d->error = "the stored row places are not tids";
        return -1;
    }
    const uint8_t *hash = p + 2 + 4 + PLACE;
    if (len == 2 + 4 + PLACE + 4 && (int32_t)be32(hash) == -1) return 0; /* no hash yet */
    if (len != 2 + 4 + PLACE + 4 + KEY || be32(hash) != KEY) {
        d->error = "the stored row hashes are not 16-byte values";
        return -1;
    }
    Py_ssize_t i = find_slot(d, hash + 4);
    if (i >= 0) memcpy(d->slot_place + i * PLACE, p + 6, PLACE);
    return 0;
}

/* Frame a chunk of stream w, calling the handler for every complete tuple. */
/* what: 0 the stored rows, 1 the source's, 2 the stored rows' places */
static int walk(Differ *d, Walk *w, const uint8_t *p, Py_ssize_t n, int what, Out *out) {
    Py_ssize_t pos = 0, len = 0;
    const char *error = NULL;
    while (1) {
        const uint8_t *at;
        Py_ssize_t avail;
        int carried = w->carry_len > 0;
        if (carried) {
            /* complete the carried item with the start of this chunk, a little at a time */
            Py_ssize_t take = w->carry_len < 4096 ? 4096 : w->carry_len;
            if (take > n - pos) take = n - pos;
            if (take == 0) return 0;
            if (carry_append(w, p + pos, take) < 0) {
                d->error = "out of memory";
                return -1;
            }
            pos += take;
            at = w->carry;
            avail = w->carry_len;
        } else {
            if (pos == n) return 0;
            at = p + pos;
            avail = n - pos;
        }
        enum item kind = parse_item(w, at, avail, &len, &error);
        if (kind == BAD) {
            d->error = error;
            return -1;
        }
        if (kind == NEED_MORE) {
            if (carried) continue;
            if (carry_append(w, at, avail) < 0) {
                d->error = "out of memory";
                return -1;
            }
            return 0;
        }
        if (kind == HEADER_ITEM) {
            w->phase = 1;
        } else if (kind == TRAILER) {
            w->phase = 2;
        } else {
            if (w->fields < 0) w->fields = be16(at);
            int rc = what == 1   ? on_source(d, at, len, out)
                     : what == 2 ? on_locate(d, at, len)
                                 : on_existing(d, at, len);
            if (rc < 0) return -1;
        }
        if (carried) {
            pos -= w->carry_len - len; /* what the item did not use is this chunk's again */
            w->carry_len = 0;
        } else {
            pos += len;
        }
    }
}

static int build_table(Differ *d) {
    d->slots = d->nkeys + d->nkeys / 3 + 1;
    d->slot_keys = malloc((size_t)d->slots * KEY);
    d->slot_state = calloc((size_t)d->slots, 1);
    if (!d->emit) d->slot_count = calloc((size_t)d->slots, sizeof(uint32_t));
    if (d->places != NULL) {
        d->slot_place = malloc((size_t)d->slots * PLACE);
        if (d->slot_place != NULL) memset(d->slot_place, NO_PLACE, (size_t)d->slots * PLACE);
    }
    if (d->slot_keys == NULL || d->slot_state == NULL || (!d->emit && d->slot_count == NULL) ||
        (d->places != NULL && d->slot_place == NULL)) {
        d->error = "out of memory";
        return -1;
    }
    for (Py_ssize_t k = 0; k < d->nkeys; k++) {
        const uint8_t *key = d->keys + k * KEY;
        for (Py_ssize_t i = slot_of(d, key);; i = (i + 1 == d->slots) ? 0 : i + 1) {
            if (d->slot_state[i] == EMPTY) {
                memcpy(d->slot_keys + i * KEY, key, KEY);
                if (d->slot_place != NULL)
                    memcpy(d->slot_place + i * PLACE, d->places + k * PLACE, PLACE);
                d->slot_state[i] = PRESENT;
                d->distinct++;
                if (d->slot_count != NULL) d->slot_count[i] = 1;
                break;
            }
            if (memcmp(d->slot_keys + i * KEY, key, KEY) == 0) {
                if (d->slot_count != NULL) d->slot_count[i]++;
                if (d->slot_state[i] == PRESENT) {
                    d->slot_state[i] = DUPLICATE;
                    d->duplicated++;
                }
                break;
            }
        }
    }
    free(d->keys);
    free(d->places);
    d->keys = NULL;
    d->places = NULL;
    d->keys_cap = 0;
    return 0;
}


/* -- the library's functions (build.py declares them for ctypes) ------------------------- */

RD_EXPORT int rd_abi(void) { return RD_ABI; }

RD_EXPORT const char *rd_source(void) { return RD_SOURCE; }

RD_EXPORT Differ *rd_new(uint64_t seed, int emit) {
    Differ *d = calloc(1, sizeof(Differ));
    if (d == NULL) return NULL;
    d->seed = seed;
    d->emit = emit;
    d->existing.fields = -1;
    d->source.fields = -1;
    d->locating.fields = -1;
    d->located = -1;
    return d;
}

RD_EXPORT void rd_free(Differ *d) {
    if (d == NULL) return;
    free(d->existing.carry);
    free(d->source.carry);
    free(d->locating.carry);
    free(d->keys);
    free(d->places);
    free(d->slot_keys);
    free(d->slot_place);
    free(d->slot_state);
    free(d->slot_count);
    free(d->out.data);
    free(d);
}

RD_EXPORT const char *rd_error(Differ *d) { return d->error ? d->error : "rowdiff failed"; }

/* mode 1: a binary COPY of the stored hashes (one uuid column, or (ctid, uuid): located);
 * 2: of rows, hashed here */
RD_EXPORT int rd_add(Differ *d, int mode, const uint8_t *p, Py_ssize_t n) {
    if (d->sealed) {
        d->error = "the existing rows are sealed already";
        return -1;
    }
    if (d->existing_mode && d->existing_mode != mode) {
        d->error = "stored hashes and rows cannot be mixed";
        return -1;
    }
    d->existing_mode = mode;
    return walk(d, &d->existing, p, n, 0, NULL);
}

RD_EXPORT int rd_seal(Differ *d) {
    if (d->sealed) return 0;
    if (d->existing_mode && (d->existing.phase != 2 || d->existing.carry_len)) {
        d->error = "the existing rows' COPY stream ended early";
        return -1;
    }
    d->sealed = 1;
    return d->nkeys > 0 ? build_table(d) : 0;
}

/* Source bytes in; what comes out is at rd_out until the next call. */
RD_EXPORT int rd_feed(Differ *d, const uint8_t *p, Py_ssize_t n) {
    d->out.len = 0;
    if (!d->sealed) {
        d->error = "seal the existing rows first";
        return -1;
    }
    /* nothing stored: every row comes out, a field longer */
    if (d->emit && d->slots == 0 && out_reserve(&d->out, n + n / 4 + HEADER) < 0) {
        d->error = "out of memory";
        return -1;
    }
    return walk(d, &d->source, p, n, 1, &d->out);
}

RD_EXPORT const uint8_t *rd_out(Differ *d, Py_ssize_t *len) {
    *len = d->out.len;
    return d->out.data;
}

RD_EXPORT int rd_finish(Differ *d) {
    d->out.len = 0;
    if (d->source.phase != 2 || d->source.carry_len) {
        d->error = "the source's COPY stream ended early";
        return -1;
    }
    if (d->emitted_header) {
        if (out_reserve(&d->out, 2) < 0) {
            d->error = "out of memory";
            return -1;
        }
        d->out.data[0] = 0xff;
        d->out.data[1] = 0xff;
        d->out.len = 2;
    }
    return 0;
}

/* The keys whose slots are in `state`, each once, into dst (NULL: how many bytes it needs). */
RD_EXPORT Py_ssize_t rd_keys(Differ *d, int state, uint8_t *dst) {
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < d->slots; i++) {
        if (d->slot_state[i] == state) {
            if (dst != NULL) memcpy(dst + count * KEY, d->slot_keys + i * KEY, KEY);
            count++;
        }
    }
    return count * KEY;
}

/* After seal: a binary COPY of the stored rows' (ctid, hash), giving each held key its row's
 * place, while the source is fed or after. */
RD_EXPORT int rd_locate(Differ *d, const uint8_t *p, Py_ssize_t n) {
    if (!d->sealed) {
        d->error = "seal the existing rows first";
        return -1;
    }
    if (d->slot_place == NULL && d->slots) {
        d->slot_place = malloc((size_t)d->slots * PLACE);
        if (d->slot_place == NULL) {
            d->error = "out of memory";
            return -1;
        }
        memset(d->slot_place, NO_PLACE, (size_t)d->slots * PLACE);
    }
    return walk(d, &d->locating, p, n, 2, NULL);
}

static int place_known(const uint8_t *place) {
    for (int b = 0; b < PLACE; b++)
        if (place[b] != NO_PLACE) return 1;
    return 0;
}

/* The places of the rows whose keys are in `state`, in rd_keys' order (NULL: how many bytes it
 * needs); 0 unless the place of every one of them is known. */
RD_EXPORT Py_ssize_t rd_places(Differ *d, int state, uint8_t *dst) {
    Py_ssize_t count = 0;
    if (d->slot_place == NULL) return 0;
    for (Py_ssize_t i = 0; i < d->slots; i++) {
        if (d->slot_state[i] == state) {
            const uint8_t *place = d->slot_place + i * PLACE;
            if (!place_known(place)) return 0;
            if (dst != NULL) memcpy(dst + count * PLACE, place, PLACE);
            count++;
        }
    }
    return count * PLACE;
}

/* rows_in, rows_new, rows_matched, distinct, duplicated, unhashed, existing */
RD_EXPORT void rd_counts(Differ *d, long long out[7]) {
    out[0] = d->rows_in;
    out[1] = d->rows_new;
    out[2] = d->rows_matched;
    out[3] = d->distinct;
    out[4] = d->duplicated;
    out[5] = d->unhashed;
    out[6] = d->nkeys;
}

RD_EXPORT void rd_hash(uint64_t seed, const uint8_t *p, Py_ssize_t n, uint8_t out[KEY]) {
    hash_tuple(seed, p, n, out);
}
