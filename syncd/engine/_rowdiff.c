/* The row differ's accelerator: the same class as syncd/engine/rowdiff.py's pure-Python `Differ`,
 * whose docstrings are the specification; tests/unit/test_rowdiff.py holds the two to identical
 * results. Optional: when it is not built (no C compiler), syncd runs the pure-Python one.
 *
 * A binary COPY stream is framed here without decoding a value: the 19-byte header (and its
 * extension area), then tuples (int16 field count, then per field an int32 length, -1 for NULL,
 * and that many bytes), then the int16 -1 trailer. Chunks arrive cut anywhere: a partial item is
 * carried over to the next chunk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

#define KEY 16
#define HEADER 19
#define EMPTY 0
#define PRESENT 1
#define DUPLICATE 2
#define MATCHED 3

static const uint8_t SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};

enum item { NEED_MORE, HEADER_ITEM, TUPLE, TRAILER, BAD };

typedef struct {
    int phase; /* 0: before the header, 1: tuples, 2: after the trailer */
    int fields; /* field count of the first tuple, -1 before it */
    uint8_t *carry;
    Py_ssize_t carry_len, carry_cap;
} Walk;

/* growable output buffer: PyMem, or (as_bytes) a bytes object returned without a copy */
typedef struct {
    uint8_t *data;
    Py_ssize_t len, cap;
    int as_bytes;
    PyObject *bytes;
} Out;

typedef struct {
    PyObject_HEAD
    uint64_t seed;
    int emit;
    int sealed;
    int flushed;
    Walk existing, source;
    int existing_mode; /* 0: not started, 1: stored hashes, 2: rows to hash */
    /* the existing rows' keys, appended, then sealed into the table */
    uint8_t *keys;
    Py_ssize_t nkeys, keys_cap;
    /* open addressing, linear probing, slot = fastrange of the key's first 8 bytes */
    uint8_t *slot_keys;
    uint8_t *slot_state;
    uint32_t *slot_count; /* emit=False (verify): copies held per key, matched one by one */
    Py_ssize_t slots;
    Out pending; /* source bytes fed before flush(), framed then */
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
        uint8_t *grown = PyMem_Realloc(w->carry, cap);
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
    if (o->as_bytes) {
        if (o->bytes == NULL) {
            o->bytes = PyBytes_FromStringAndSize(NULL, cap);
            if (o->bytes == NULL) return -1;
        } else if (_PyBytes_Resize(&o->bytes, cap) < 0) {
            return -1; /* it freed the object and set it NULL */
        }
        o->data = (uint8_t *)PyBytes_AS_STRING(o->bytes);
    } else {
        uint8_t *grown = PyMem_Realloc(o->data, cap);
        if (grown == NULL) return -1;
        o->data = grown;
    }
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

/* handlers: 0 ok, -1 error (d->error set, or a Python exception with PyErr_Occurred) */
static int on_existing(Differ *d, const uint8_t *p, Py_ssize_t len) {
    uint8_t key[KEY];
    if (d->existing_mode == 1) {
        /* one field: the stored hash (uuid), NULL for rows an older syncd landed */
        if (len == 6 && (int32_t)be32(p + 2) == -1) {
            d->unhashed++;
            return 0;
        }
        if (len != 2 + 4 + KEY || be16(p) != 1 || be32(p + 2) != KEY) {
            d->error = "the stored row hashes are not 16-byte values";
            return -1;
        }
        memcpy(key, p + 6, KEY);
    } else {
        hash_tuple(d->seed, p, len, key);
    }
    if (d->nkeys == d->keys_cap) {
        Py_ssize_t cap = d->keys_cap ? d->keys_cap + d->keys_cap / 2 : 4096;
        uint8_t *grown = PyMem_Realloc(d->keys, (size_t)cap * KEY);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        d->keys = grown;
        d->keys_cap = cap;
    }
    memcpy(d->keys + d->nkeys * KEY, key, KEY);
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
        PyErr_NoMemory();
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

/* Frame a chunk of stream w, calling the handler for every complete tuple. */
static int walk(Differ *d, Walk *w, const uint8_t *p, Py_ssize_t n, int source, Out *out) {
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
                PyErr_NoMemory();
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
                PyErr_NoMemory();
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
            int rc = source ? on_source(d, at, len, out) : on_existing(d, at, len);
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

static int build_table(Differ *d);

static PyObject *fail(Differ *d) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, d->error ? d->error : "rowdiff");
    d->error = NULL;
    return NULL;
}

static int Differ_init(Differ *d, PyObject *args, PyObject *kwds) {
    static char *names[] = {"seed", "emit", NULL};
    unsigned long long seed;
    int emit = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "K|p", names, &seed, &emit)) return -1;
    d->seed = seed;
    d->emit = emit;
    d->existing.fields = -1;
    d->source.fields = -1;
    return 0;
}

static void Differ_dealloc(Differ *d) {
    PyMem_Free(d->existing.carry);
    PyMem_Free(d->source.carry);
    PyMem_Free(d->keys);
    PyMem_Free(d->slot_keys);
    PyMem_Free(d->slot_state);
    PyMem_Free(d->slot_count);
    PyMem_Free(d->pending.data);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyObject *add_existing(Differ *d, PyObject *arg, int mode) {
    if (d->sealed) {
        PyErr_SetString(PyExc_RuntimeError, "the existing rows are sealed already");
        return NULL;
    }
    if (d->existing_mode && d->existing_mode != mode) {
        PyErr_SetString(PyExc_RuntimeError, "stored hashes and rows cannot be mixed");
        return NULL;
    }
    d->existing_mode = mode;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc = walk(d, &d->existing, view.buf, view.len, 0, NULL);
    PyBuffer_Release(&view);
    if (rc < 0) return fail(d);
    Py_RETURN_NONE;
}

static PyObject *Differ_add_stored(Differ *d, PyObject *arg) { return add_existing(d, arg, 1); }

static PyObject *Differ_add_rows(Differ *d, PyObject *arg) { return add_existing(d, arg, 2); }

static PyObject *frame_source(Differ *d, const uint8_t *p, Py_ssize_t n) {
    Out out = {NULL, 0, 0, 1, NULL};
    /* nothing stored: every row comes out, a field longer */
    if (d->emit && d->slots == 0 && n > 0 && out_reserve(&out, n + n / 4 + HEADER) < 0) {
        return PyErr_NoMemory();
    }
    if (walk(d, &d->source, p, n, 1, &out) < 0) {
        Py_XDECREF(out.bytes);
        return fail(d);
    }
    if (out.len == 0) {
        Py_XDECREF(out.bytes);
        return PyBytes_FromStringAndSize("", 0);
    }
    if (_PyBytes_Resize(&out.bytes, out.len) < 0) return NULL;
    return out.bytes;
}

static PyObject *Differ_seal(Differ *d, PyObject *Py_UNUSED(ignored)) {
    if (d->sealed) Py_RETURN_NONE;
    if (d->existing_mode && (d->existing.phase != 2 || d->existing.carry_len)) {
        PyErr_SetString(PyExc_ValueError, "the existing rows' COPY stream ended early");
        return NULL;
    }
    d->sealed = 1;
    if (d->nkeys > 0 && build_table(d) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Differ_flush(Differ *d, PyObject *Py_UNUSED(ignored)) {
    if (!d->sealed) {
        PyErr_SetString(PyExc_RuntimeError, "seal() the existing rows first");
        return NULL;
    }
    if (d->flushed) return PyBytes_FromStringAndSize("", 0);
    d->flushed = 1;
    PyObject *result = frame_source(d, d->pending.data, d->pending.len);
    PyMem_Free(d->pending.data);
    d->pending.data = NULL;
    d->pending.len = d->pending.cap = 0;
    return result;
}

static int build_table(Differ *d) {
    d->slots = d->nkeys + d->nkeys / 3 + 1;
    d->slot_keys = PyMem_Malloc((size_t)d->slots * KEY);
    d->slot_state = PyMem_Calloc((size_t)d->slots, 1);
    if (!d->emit) d->slot_count = PyMem_Calloc((size_t)d->slots, sizeof(uint32_t));
    if (d->slot_keys == NULL || d->slot_state == NULL || (!d->emit && d->slot_count == NULL)) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < d->nkeys; k++) {
        const uint8_t *key = d->keys + k * KEY;
        for (Py_ssize_t i = slot_of(d, key);; i = (i + 1 == d->slots) ? 0 : i + 1) {
            if (d->slot_state[i] == EMPTY) {
                memcpy(d->slot_keys + i * KEY, key, KEY);
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
    PyMem_Free(d->keys);
    d->keys = NULL;
    d->keys_cap = 0;
    return 0;
}

static PyObject *Differ_feed(Differ *d, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result;
    if (d->flushed) {
        result = frame_source(d, view.buf, view.len);
    } else if (out_reserve(&d->pending, view.len) < 0) {
        result = PyErr_NoMemory();
    } else {
        memcpy(d->pending.data + d->pending.len, view.buf, view.len);
        d->pending.len += view.len;
        result = PyBytes_FromStringAndSize("", 0);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *Differ_pending(Differ *d, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(d->pending.len);
}

static PyObject *Differ_finish(Differ *d, PyObject *Py_UNUSED(ignored)) {
    if (!d->flushed) {
        PyErr_SetString(PyExc_RuntimeError, "flush() the source bytes fed before seal() first");
        return NULL;
    }
    if (d->source.phase != 2 || d->source.carry_len) {
        PyErr_SetString(PyExc_ValueError, "the source's COPY stream ended early");
        return NULL;
    }
    if (!d->emitted_header) return PyBytes_FromStringAndSize("", 0);
    return PyBytes_FromStringAndSize("\xff\xff", 2);
}

/* keys whose slots are in `state` (each once) */
static PyObject *keys_in(Differ *d, uint8_t state) {
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < d->slots; i++) count += d->slot_state[i] == state;
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * KEY);
    if (result == NULL) return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < d->slots; i++) {
        if (d->slot_state[i] == state) {
            memcpy(o, d->slot_keys + i * KEY, KEY);
            o += KEY;
        }
    }
    return result;
}

static PyObject *Differ_gone(Differ *d, PyObject *Py_UNUSED(ignored)) {
    return keys_in(d, PRESENT);
}

static PyObject *Differ_duplicates(Differ *d, PyObject *Py_UNUSED(ignored)) {
    return keys_in(d, DUPLICATE);
}

static PyObject *Differ_counts(Differ *d, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:n}", "rows_in", d->rows_in, "rows_new",
                         d->rows_new, "rows_matched", d->rows_matched, "distinct", d->distinct,
                         "duplicated", d->duplicated, "unhashed", d->unhashed, "existing",
                         d->nkeys ? d->nkeys : (Py_ssize_t)(d->distinct));
}

static PyMethodDef Differ_methods[] = {
    {"add_stored", (PyCFunction)Differ_add_stored, METH_O, NULL},
    {"add_rows", (PyCFunction)Differ_add_rows, METH_O, NULL},
    {"seal", (PyCFunction)Differ_seal, METH_NOARGS, NULL},
    {"flush", (PyCFunction)Differ_flush, METH_NOARGS, NULL},
    {"feed", (PyCFunction)Differ_feed, METH_O, NULL},
    {"finish", (PyCFunction)Differ_finish, METH_NOARGS, NULL},
    {"gone", (PyCFunction)Differ_gone, METH_NOARGS, NULL},
    {"duplicates", (PyCFunction)Differ_duplicates, METH_NOARGS, NULL},
    {"counts", (PyCFunction)Differ_counts, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Differ_getset[] = {
    {"pending", (getter)Differ_pending, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DifferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncd.engine._rowdiff.Differ",
    .tp_basicsize = sizeof(Differ),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Differ_init,
    .tp_dealloc = (destructor)Differ_dealloc,
    .tp_methods = Differ_methods,
    .tp_getset = Differ_getset,
};

static PyObject *row_hash(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer view;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y*K", &view, &seed)) return NULL;
    uint8_t key[KEY];
    hash_tuple(seed, view.buf, view.len, key);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)key, KEY);
}

static PyMethodDef module_methods[] = {
    {"row_hash", row_hash, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rowdiff",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__rowdiff(void) {
    if (PyType_Ready(&DifferType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&DifferType);
    if (PyModule_AddObject(m, "Differ", (PyObject *)&DifferType) < 0) {
        Py_DECREF(&DifferType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
