/*
 * parsers._evtx_scan: pyevtx-rs records -> Arrow columns, without a Python object per record.
 *
 * Why this exists: reading a record with pyevtx-rs costs ~2 us; turning its JSON into a
 * row in Python (decode, one append per column, flatten the payload, convert the lists)
 * cost ~9 us more, so ingest ran at a fifth of the speed of the read itself.  This module
 * pulls records from the pyevtx-rs iterator, scans each record's JSON once and writes
 * the System columns and the payload's `data` text straight into Arrow buffers, which polars
 * takes through the Arrow PyCapsule interface (no copy, no per-value conversion).
 *
 * It is deliberately partial.  It handles exactly the shapes pyevtx-rs writes for
 * ordinary records, and for anything else it hands the record back to Python, which
 * runs the reference code in parsers/evtx_rows.py on it:
 *   - a record whose JSON or System is unusual in any way (a type other than the one
 *     the typed msgspec decode expects, a repeated key, an escape in a key, a raw
 *     control character, a number that is not a plain int64, ...) is returned whole
 *     ("record" fallback) and its row is filled by Python;
 *   - a record whose payload has a shape it leaves to Python (see "the payload" below)
 *     gets a null `data` and is returned for its payload only ("payload" fallback).
 * So every row this module writes equals the row the Python path writes: the
 * differential tests (tests/test_evtx_scan.py) compare both on every record of the
 * public corpus and on generated records.  All scanning is bounds-checked against the
 * record's length; nothing here trusts the input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html) */

#define ARROW_FLAG_NULLABLE 2
#define FIRST_ROWS 256 /* rows a batch's table has room for at first (it doubles) */

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

/* ---- the columns, in parsers/evtx_rows.py's _RAW_SCHEMA order, then `data` */

enum { K_STR, K_I64, K_U64 };

typedef struct {
    const char *name;
    int kind;
} ColumnSpec;

static const ColumnSpec COLUMNS[] = {
    {"time", K_STR},        {"computer", K_STR},  {"channel", K_STR},  {"provider", K_STR},
    {"guid", K_STR},        {"event_id", K_I64},  {"qualifiers", K_I64}, {"version", K_I64},
    {"level", K_I64},       {"task", K_I64},      {"opcode", K_I64},   {"keywords", K_U64},
    {"record_id", K_I64},   {"header_record_id", K_I64}, {"process_id", K_I64},
    {"thread_id", K_I64},   {"user_sid", K_STR},  {"data", K_STR},
};
enum {
    C_TIME, C_COMPUTER, C_CHANNEL, C_PROVIDER, C_GUID, C_EVENT_ID, C_QUALIFIERS, C_VERSION,
    C_LEVEL, C_TASK, C_OPCODE, C_KEYWORDS, C_RECORD_ID, C_HEADER, C_PID, C_TID, C_USER_SID,
    C_DATA, N_COLUMNS
};

typedef struct {
    int kind;
    int64_t nulls;
    uint8_t *valid;   /* bitmap, one bit per row */
    int64_t *values;  /* K_I64 / K_U64 (stored as the same 8 bytes) */
    int64_t *offsets; /* K_STR: large_utf8 offsets, rows + 1 */
    char *data;       /* K_STR bytes */
    size_t size, capacity;
} Column;

typedef struct {
    int64_t rows, capacity;
    Column columns[N_COLUMNS];
} Table;

static void table_free(Table *t) {
    if (t == NULL) return;
    for (int i = 0; i < N_COLUMNS; i++) {
        Column *c = &t->columns[i];
        free(c->valid);
        free(c->values);
        free(c->offsets);
        free(c->data);
    }
    free(t);
}

static Table *table_new(int64_t capacity) {
    Table *t = calloc(1, sizeof(Table));
    if (t == NULL) return NULL;
    t->capacity = capacity;
    for (int i = 0; i < N_COLUMNS; i++) {
        Column *c = &t->columns[i];
        c->kind = COLUMNS[i].kind;
        c->valid = calloc((size_t)(capacity / 8 + 1), 1);
        if (c->kind == K_STR) {
            c->offsets = calloc((size_t)capacity + 1, sizeof(int64_t));
            c->capacity = 4096;
            c->data = malloc(c->capacity);
            if (c->offsets == NULL || c->data == NULL) goto fail;
        } else {
            c->values = calloc((size_t)capacity + 1, sizeof(int64_t));
            if (c->values == NULL) goto fail;
        }
        if (c->valid == NULL) goto fail;
    }
    return t;
fail:
    table_free(t);
    return NULL;
}

/* Room for ``capacity`` rows; the added bytes zeroed, as table_new's are. Tables start
 * small and double: a batch of a small log then holds about what it uses. */
static void *grown_zeroed(void *buffer, size_t used, size_t want) {
    char *grown = realloc(buffer, want);
    if (grown != NULL) memset(grown + used, 0, want - used);
    return grown;
}

static int table_grow(Table *t, int64_t capacity) {
    size_t old = (size_t)t->capacity, rows = (size_t)capacity;
    for (int i = 0; i < N_COLUMNS; i++) {
        Column *c = &t->columns[i];
        uint8_t *valid = grown_zeroed(c->valid, old / 8 + 1, rows / 8 + 1);
        if (valid == NULL) return -1;
        c->valid = valid;
        int64_t **per_row = c->kind == K_STR ? &c->offsets : &c->values;
        int64_t *grown = grown_zeroed(*per_row, (old + 1) * 8, (rows + 1) * 8);
        if (grown == NULL) return -1;
        *per_row = grown;
    }
    t->capacity = capacity;
    return 0;
}

static int reserve(Column *c, size_t more) {
    if (c->size + more <= c->capacity) return 0;
    size_t want = c->capacity * 2;
    while (want < c->size + more) want *= 2;
    char *grown = realloc(c->data, want);
    if (grown == NULL) return -1;
    c->data = grown;
    c->capacity = want;
    return 0;
}

/* ---- JSON scanning (compact or not; strict: what msgspec rejects, this rejects) */

typedef struct {
    const char *start; /* after the opening quote */
    const char *end;   /* at the closing quote */
    int escaped;       /* holds at least one escape */
    int canonical;     /* every escape is one msgspec writes the same way */
} Str;

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, const char *e, unsigned *out) {
    if (e - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0) return -1;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Is `\u00XX` (p at the 'u') the way msgspec writes that control character? */
static int canonical_u(const char *p, unsigned v) {
    if (v >= 0x20 || v == 0x08 || v == 0x09 || v == 0x0a || v == 0x0c || v == 0x0d) return 0;
    for (int i = 1; i <= 4; i++)
        if (p[i] >= 'A' && p[i] <= 'F') return 0; /* msgspec writes lower-case hex */
    return 1;
}

/* The bytes a string scan must look at: a quote, a backslash, a control character.
 * Sixteen bytes at a time with SSE2 (every x86-64), else eight at a time in a 64-bit
 * word; either way p moves to the first such byte (or near the end of the text). */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static const char *next_look(const char *p, const char *e) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
    const __m128i control = _mm_set1_epi8(0x1f);
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
                                   _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (e - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t q = v ^ (ONES * '"'), b = v ^ (ONES * '\\');
        /* the lowest flagged byte is exact (false flags only sit above a true one) */
        uint64_t hit = (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v)) & HIGHS;
        if (hit) {
            uint64_t one = 1;
            int at = 0;
            while (!(hit & (one << (8 * at + 7)))) at++; /* little-endian byte order */
            return p + at;
        }
        p += 8;
    }
    return p;
}

/* p at the opening quote. Returns the position after the closing quote, or NULL. */
static const char *scan_string(const char *p, const char *e, Str *s) {
    p++;
    s->start = p;
    s->escaped = 0;
    s->canonical = 1;
    while (p < e) {
        p = next_look(p, e);
        if (p >= e) break;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            s->end = p;
            return p + 1;
        }
        if (c < 0x20) return NULL; /* a raw control character: invalid JSON */
        if (c != '\\') {
            p++;
            continue;
        }
        s->escaped = 1;
        if (e - p < 2) return NULL;
        char k = p[1];
        if (k == '"' || k == '\\' || k == 'b' || k == 'f' || k == 'n' || k == 'r' || k == 't') {
            p += 2;
        } else if (k == '/') {
            s->canonical = 0;
            p += 2;
        } else if (k == 'u') {
            unsigned v;
            if (hex4(p + 2, e, &v) < 0) return NULL;
            if (v >= 0xDC00 && v <= 0xDFFF) return NULL; /* a lone low surrogate */
            if (v >= 0xD800 && v <= 0xDBFF) {
                unsigned low;
                if (e - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, e, &low) < 0 ||
                    low < 0xDC00 || low > 0xDFFF)
                    return NULL;
                s->canonical = 0;
                p += 12;
            } else {
                if (!canonical_u(p + 1, v)) s->canonical = 0;
                p += 6;
            }
        } else {
            return NULL;
        }
    }
    return NULL;
}

static int str_equals(const Str *s, const char *name, size_t n) {
    return (size_t)(s->end - s->start) == n && !s->escaped && memcmp(s->start, name, n) == 0;
}
#define str_is(s, name) str_equals((s), (name), sizeof(name) - 1)

/* A JSON integer that fits int64, with nothing after it that would make it a float. */
static const char *scan_int(const char *p, const char *e, int64_t *out) {
    const char *start = p;
    int negative = 0;
    if (p < e && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9') return NULL;
    if (*p == '0' && p + 1 < e && p[1] >= '0' && p[1] <= '9') return NULL;
    uint64_t v = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return NULL;
        v = v * 10 + d;
        p++;
    }
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
    if (negative ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX) return NULL;
    if (negative && v == 0) return NULL; /* "-0": let the reference path decide */
    *out = negative ? (int64_t)(0 - v) : (int64_t)v;
    (void)start;
    return p;
}

#define MAX_DEPTH 64

static const char *skip_value(const char *p, const char *e, int depth);

static const char *skip_container(const char *p, const char *e, int depth, char close) {
    if (depth > MAX_DEPTH) return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == close) return p + 1;
    for (;;) {
        if (close == '}') {
            Str key;
            if (p >= e || *p != '"' || (p = scan_string(p, e, &key)) == NULL) return NULL;
            p = skip_ws(p, e);
            if (p >= e || *p != ':') return NULL;
            p = skip_ws(p + 1, e);
        }
        if ((p = skip_value(p, e, depth + 1)) == NULL) return NULL;
        p = skip_ws(p, e);
        if (p >= e) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, e);
    }
}

static const char *skip_literal(const char *p, const char *e, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(e - p) < n || memcmp(p, word, n) != 0) return NULL;
    return p + n;
}

static const char *skip_number(const char *p, const char *e) {
    if (p < e && *p == '-') p++;
    if (p >= e || *p < '0' || *p > '9') return NULL;
    if (*p == '0') {
        p++;
    } else {
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

static const char *skip_value(const char *p, const char *e, int depth) {
    if (p >= e) return NULL;
    Str s;
    switch (*p) {
    case '"': return scan_string(p, e, &s);
    case '{': return skip_container(p, e, depth, '}');
    case '[': return skip_container(p, e, depth, ']');
    case 't': return skip_literal(p, e, "true");
    case 'f': return skip_literal(p, e, "false");
    case 'n': return skip_literal(p, e, "null");
    default: return skip_number(p, e);
    }
}

/* ---- one record's System, as the typed msgspec decode would see it */

typedef struct {
    int set;     /* 0: null/absent */
    Str s;
} OptStr;

typedef struct {
    int set;
    int64_t v;
} OptInt;

typedef struct {
    OptStr name, guid, source_name, system_time, user_id;
    OptInt qualifiers, process_id, thread_id;
} Attrs;

typedef struct {
    int set; /* the element was an object (not null / absent) */
    Attrs attrs;
    OptInt text;
} Element;

typedef struct {
    Element provider, time_created, execution, security;
    OptInt event_id; /* a plain integer EventID */
    Element event_id_element;
    OptInt version, level, task, opcode, record_id;
    OptStr keywords, channel, computer;
    Column *data;       /* the `data` column: a payload is written to it as it is scanned */
    size_t data_mark;   /* the column's size before this record */
    int payload_sections; /* EventData, UserData, ProcessingErrorData seen */
    int written;          /* the payload section seen last is written past data_mark */
    int nomem;
} Record;

/* a value that must be a string or null */
static const char *opt_string(const char *p, const char *e, OptStr *out) {
    if (out->set == 2) return NULL; /* seen twice */
    if (p < e && *p == 'n') {
        out->set = 2; /* remembered as seen, value null */
        out->s.start = NULL;
        return skip_literal(p, e, "null");
    }
    if (p >= e || *p != '"') return NULL;
    p = scan_string(p, e, &out->s);
    out->set = 2;
    return p;
}

static const char *opt_int(const char *p, const char *e, OptInt *out) {
    if (out->set == 2 || out->set == 3) return NULL;
    if (p < e && *p == 'n') {
        out->set = 3; /* seen, null */
        return skip_literal(p, e, "null");
    }
    p = scan_int(p, e, &out->v);
    if (p != NULL) out->set = 2;
    return p;
}

static int str_present(const OptStr *o) { return o->set == 2 && o->s.start != NULL; }
static int int_present(const OptInt *o) { return o->set == 2; }

/* Iterate an object's members, p at its '{': for each, `key` is the key's scanned text,
 * `key_at` its opening quote, and BODY runs with p at the value and moves p past it (NULL:
 * not understood). The enclosing function returns NULL for anything but a well-formed
 * object, and for a key holding an escape unless `escaped_keys`; p ends after the '}'. */
#define FOR_MEMBERS(p, e, key, key_at, escaped_keys, BODY)                   \
    do {                                                                     \
        p = skip_ws(p + 1, e);                                               \
        if (p < e && *p == '}') {                                            \
            p++;                                                             \
            break;                                                           \
        }                                                                    \
        for (;;) {                                                           \
            const char *key_at = p;                                          \
            (void)key_at;                                                    \
            if (p >= e || *p != '"' || (p = scan_string(p, e, &key)) == NULL) \
                return NULL;                                                 \
            if (key.escaped && !(escaped_keys)) return NULL;                 \
            p = skip_ws(p, e);                                               \
            if (p >= e || *p != ':') return NULL;                            \
            p = skip_ws(p + 1, e);                                           \
            BODY                                                             \
            if (p == NULL) return NULL;                                      \
            p = skip_ws(p, e);                                               \
            if (p >= e) return NULL;                                         \
            if (*p == '}') {                                                 \
                p++;                                                         \
                break;                                                       \
            }                                                                \
            if (*p != ',') return NULL;                                      \
            p = skip_ws(p + 1, e);                                           \
        }                                                                    \
    } while (0)

static const char *parse_attrs(const char *p, const char *e, Attrs *a) {
    if (p >= e || *p != '{') return NULL; /* null here fails the typed decode */
    Str key;
    FOR_MEMBERS(p, e, key, key_at, 0, {
        if (str_is(&key, "Name")) p = opt_string(p, e, &a->name);
        else if (str_is(&key, "Guid")) p = opt_string(p, e, &a->guid);
        else if (str_is(&key, "EventSourceName")) p = opt_string(p, e, &a->source_name);
        else if (str_is(&key, "SystemTime")) p = opt_string(p, e, &a->system_time);
        else if (str_is(&key, "UserID")) p = opt_string(p, e, &a->user_id);
        else if (str_is(&key, "Qualifiers")) p = opt_int(p, e, &a->qualifiers);
        else if (str_is(&key, "ProcessID")) p = opt_int(p, e, &a->process_id);
        else if (str_is(&key, "ThreadID")) p = opt_int(p, e, &a->thread_id);
        else p = skip_value(p, e, 3);
    });
    return p;
}

/* an element (object with #attributes / #text) or null; anything else: NULL */
static const char *parse_element(const char *p, const char *e, Element *el) {
    if (el->set) return NULL; /* seen twice */
    if (p < e && *p == 'n') {
        el->set = 2; /* null */
        return skip_literal(p, e, "null");
    }
    if (p >= e || *p != '{') return NULL;
    el->set = 1;
    int attrs_seen = 0;
    Str key;
    FOR_MEMBERS(p, e, key, key_at, 0, {
        if (str_is(&key, "#attributes")) {
            if (attrs_seen++) return NULL;
            p = parse_attrs(p, e, &el->attrs);
        } else if (str_is(&key, "#text")) {
            p = opt_int(p, e, &el->text);
        } else {
            p = skip_value(p, e, 3);
        }
    });
    return p;
}

static const char *parse_system(const char *p, const char *e, Record *r) {
    if (p >= e || *p != '{') return NULL;
    Str key;
    int event_id_seen = 0;
    FOR_MEMBERS(p, e, key, key_at, 0, {
        if (str_is(&key, "Provider")) p = parse_element(p, e, &r->provider);
        else if (str_is(&key, "EventID")) {
            if (event_id_seen++) return NULL;
            if (p < e && *p == '{') p = parse_element(p, e, &r->event_id_element);
            else p = opt_int(p, e, &r->event_id);
        } else if (str_is(&key, "Version")) p = opt_int(p, e, &r->version);
        else if (str_is(&key, "Level")) p = opt_int(p, e, &r->level);
        else if (str_is(&key, "Task")) p = opt_int(p, e, &r->task);
        else if (str_is(&key, "Opcode")) p = opt_int(p, e, &r->opcode);
        else if (str_is(&key, "Keywords")) p = opt_string(p, e, &r->keywords);
        else if (str_is(&key, "TimeCreated")) p = parse_element(p, e, &r->time_created);
        else if (str_is(&key, "EventRecordID")) p = opt_int(p, e, &r->record_id);
        else if (str_is(&key, "Execution")) p = parse_element(p, e, &r->execution);
        else if (str_is(&key, "Channel")) p = opt_string(p, e, &r->channel);
        else if (str_is(&key, "Computer")) p = opt_string(p, e, &r->computer);
        else if (str_is(&key, "Security")) p = parse_element(p, e, &r->security);
        else p = skip_value(p, e, 2);
    });
    return p;
}

/* ---- the payload: the `data` text, written as it is scanned
 *
 * parsers/evtx_payload.py's rules (docs/schema.md), for payloads whose every key comes
 * out once and whose every text is written with the escapes msgspec itself writes (so
 * text is copied, never decoded and encoded again):
 *   - EventData: each member an element under its key (an element with a non-empty Name
 *     attribute under that name), unnamed Data values as Data_0, Data_1, ...;
 *   - UserData with one wrapper element: the wrapper's children, each an element;
 *   - an element: its text under its path, its attributes at path.attribute (xmlns
 *     declarations are none), its children at path.child; a value's text: text as written,
 *     integers in decimal, null "", true / false, a list's items joined with ',';
 *   - no payload section, or one that is null: {}.
 * Anything else (a key the reference would number as a repeat, floats, integers beyond 64
 * bits, two sections, ProcessingErrorData, nesting deeper than 16, ...) is left to Python. */

#define MAX_KEYS 256    /* keys one payload may write */
#define MAX_CHILDREN 64 /* members of one element */
#define MAX_DEPTH_PAYLOAD 16

typedef struct {
    Column *c;
    size_t key_at[MAX_KEYS]; /* each key written: where its text starts in c->data */
    size_t key_len[MAX_KEYS];
    uint64_t key_hash[MAX_KEYS];
    int n;       /* keys written */
    int unnamed; /* Data_0 .. Data_{unnamed-1} written */
    int nomem;
} Writer;

/* FNV-1a: repeated keys are looked for by hash first. */
static uint64_t text_hash(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

/* A JSON integer's text that Python's str(int(text)) gives back unchanged. */
static const char *scan_int_text(const char *p, const char *e) {
    const char *start = p;
    if (p < e && *p == '-') p++;
    if (p >= e || *p < '0' || *p > '9') return NULL;
    if (*p == '0' && (p + 1 < e && p[1] >= '0' && p[1] <= '9')) return NULL;
    if (*p == '0' && p > start) return NULL; /* "-0" */
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
    if (p - start > 20) return NULL; /* beyond 64 bits: rare, and left to Python */
    return p;
}

static inline void put(Writer *w, const char *p, size_t n) {
    Column *c = w->c;
    if (c->size + n > c->capacity && (w->nomem || reserve(c, n) < 0)) {
        w->nomem = 1;
        return;
    }
    memcpy(c->data + c->size, p, n);
    c->size += n;
}

static int same_text(const Str *a, const Str *b) {
    return a->end - a->start == b->end - b->start &&
           memcmp(a->start, b->start, (size_t)(a->end - a->start)) == 0;
}

/* Start a member: a comma after the one before, then the key's opening quote; returns
 * where the key's text starts. */
static size_t key_begin(Writer *w) {
    if (w->n) put(w, ",\"", 2);
    else put(w, "\"", 1);
    return w->c->size;
}

/* End the key begun at `start`: 0, or -1 when the payload already has a key of that text
 * (the reference numbers repeats: left to it). */
static int key_end(Writer *w, size_t start) {
    if (w->nomem || w->n == MAX_KEYS) return -1;
    size_t len = w->c->size - start;
    const char *text = w->c->data + start;
    uint64_t hash = text_hash(text, len);
    for (int i = 0; i < w->n; i++)
        if (w->key_hash[i] == hash && w->key_len[i] == len &&
            memcmp(w->c->data + w->key_at[i], text, len) == 0)
            return -1;
    w->key_at[w->n] = start;
    w->key_len[w->n] = len;
    w->key_hash[w->n] = hash;
    w->n++;
    put(w, "\":", 2);
    return w->nomem ? -1 : 0;
}

/* The key of an element: its path, names joined with '.' as _join joins them (each as the
 * source wrote it, which is how msgspec writes it, every escape being canonical). */
static int put_key(Writer *w, const Str *path, int depth) {
    size_t start = key_begin(w);
    if (depth == 1) {
        put(w, path[0].start, (size_t)(path[0].end - path[0].start));
        return key_end(w, start);
    }
    for (int i = 0; i < depth; i++) {
        if (i && w->c->size > start) put(w, ".", 1); /* an empty path so far takes no dot */
        put(w, path[i].start, (size_t)(path[i].end - path[i].start));
    }
    return key_end(w, start);
}

static const char *put_text(Writer *w, const char *p, const char *e, int depth);

/* An element met as a value (p at '{'): the text of its "#text", or nothing. */
static const char *put_element_text(Writer *w, const char *p, const char *e, int depth) {
    const char *text = NULL;
    Str key;
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (str_is(&key, "#text")) {
            if (text != NULL) return NULL;
            text = p;
        }
        p = skip_value(p, e, 4);
    });
    if (text != NULL && put_text(w, text, e, depth + 1) == NULL) return NULL;
    return p;
}

/* A value's text, as parsers/evtx_payload.py value_text makes it (inside a JSON string):
 * text as written, an integer in decimal, null nothing, true / false, a list's items
 * joined with ',', an element its "#text". A float: NULL (left to Python). */
static const char *put_text(Writer *w, const char *p, const char *e, int depth) {
    const char *at = p;
    Str s;
    if (p >= e || depth > MAX_DEPTH_PAYLOAD) return NULL;
    switch (*p) {
    case '"':
        if ((p = scan_string(p, e, &s)) == NULL || !s.canonical) return NULL;
        put(w, s.start, (size_t)(s.end - s.start));
        return p;
    case 'n':
        return skip_literal(p, e, "null");
    case 't':
        if ((p = skip_literal(p, e, "true")) != NULL) put(w, "true", 4);
        return p;
    case 'f':
        if ((p = skip_literal(p, e, "false")) != NULL) put(w, "false", 5);
        return p;
    case '[':
        p = skip_ws(p + 1, e);
        if (p < e && *p == ']') return p + 1;
        for (int first = 1;; first = 0) {
            if (!first) put(w, ",", 1);
            if ((p = put_text(w, p, e, depth + 1)) == NULL) return NULL;
            p = skip_ws(p, e);
            if (p >= e) return NULL;
            if (*p == ']') return p + 1;
            if (*p != ',') return NULL;
            p = skip_ws(p + 1, e);
        }
    case '{':
        return put_element_text(w, p, e, depth);
    default:
        if ((p = scan_int_text(p, e)) == NULL) return NULL;
        put(w, at, (size_t)(p - at));
        return p;
    }
}

/* "key": "text of the value" */
static const char *put_value(Writer *w, const Str *path, int depth, const char *p,
                             const char *e) {
    if (put_key(w, path, depth) < 0) return NULL;
    if (p < e && *p == '"') { /* text: copied with its quotes, as most values are */
        const char *at = p;
        Str s;
        if ((p = scan_string(p, e, &s)) == NULL || !s.canonical) return NULL;
        put(w, at, (size_t)(p - at));
        return p;
    }
    put(w, "\"", 1);
    p = put_text(w, p, e, depth);
    put(w, "\"", 1);
    return p;
}

/* One element at `path` (parsers/evtx_payload.py _element): a value is written under the
 * path; an object writes its text (when it has one, or nothing else), then its attributes
 * (path.name; xmlns declarations and, with `skip_name`, Name are none), then each child
 * element at path.child. `path` has room for MAX_DEPTH_PAYLOAD + 1 names. */
static const char *put_element(Writer *w, Str *path, int depth, const char *p, const char *e,
                               int skip_name) {
    if (p >= e || depth > MAX_DEPTH_PAYLOAD) return NULL;
    if (*p != '{') return put_value(w, path, depth, p, e);
    const char *text = NULL, *attrs = NULL;
    Str names[MAX_CHILDREN];
    const char *values[MAX_CHILDREN];
    int n = 0;
    Str key;
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (!key.canonical) return NULL;
        if (str_is(&key, "#text")) {
            if (text != NULL) return NULL;
            text = p;
        } else if (str_is(&key, "#attributes")) {
            if (attrs != NULL) return NULL;
            attrs = p;
        } else {
            if (n == MAX_CHILDREN) return NULL;
            for (int i = 0; i < n; i++)
                if (same_text(&names[i], &key)) return NULL; /* numbered by the reference */
            names[n] = key;
            values[n++] = p;
        }
        p = skip_value(p, e, 4);
    });
    if (text != NULL || n == 0) {
        if (put_key(w, path, depth) < 0) return NULL;
        put(w, "\"", 1);
        if (text != NULL && put_text(w, text, e, depth) == NULL) return NULL;
        put(w, "\"", 1);
    }
    if (attrs != NULL && *attrs == '{') { /* attributes that are no object: none */
        const char *a = attrs;
        FOR_MEMBERS(a, e, key, key_at, 1, {
            if (!key.canonical) return NULL;
            size_t len = (size_t)(key.end - key.start);
            if ((len >= 5 && memcmp(key.start, "xmlns", 5) == 0) ||
                (skip_name && str_is(&key, "Name"))) {
                a = skip_value(a, e, 4);
            } else {
                path[depth] = key;
                a = put_value(w, path, depth + 1, a, e);
            }
        });
    }
    for (int i = 0; i < n; i++) {
        path[depth] = names[i];
        if (put_element(w, path, depth + 1, values[i], e, 0) == NULL) return NULL;
    }
    return p;
}

/* The Name attribute of the attributes object at p, when it is non-empty text: `*named`
 * 1 and `name` its text; else `*named` 0. NULL: a shape to leave to Python. */
static const char *attribute_name(const char *p, const char *e, Str *name, int *named) {
    Str key;
    int seen = 0;
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (str_is(&key, "Name")) {
            if (seen++) return NULL;
            if (p < e && *p == '"') {
                if ((p = scan_string(p, e, name)) == NULL || !name->canonical) return NULL;
                *named = name->end > name->start;
            } else {
                p = skip_value(p, e, 4);
            }
        } else {
            p = skip_value(p, e, 4);
        }
    });
    return p;
}

/* An EventData element (p at '{') whose attributes name it (Name, non-empty text): the
 * key it is written under (parsers/evtx_payload.py _event_data). NULL: leave to Python. */
static const char *element_name(const char *p, const char *e, Str *name, int *named) {
    int attributes = 0;
    Str key;
    *named = 0;
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (str_is(&key, "#attributes")) {
            if (attributes++) return NULL;
            p = p < e && *p == '{' ? attribute_name(p, e, name, named) : skip_value(p, e, 4);
        } else {
            p = skip_value(p, e, 4);
        }
    });
    return p;
}

/* Unnamed <Data> values, {"#text": value or [values]}: Data_0, Data_1, ... */
static const char *put_unnamed(Writer *w, const char *p, const char *e) {
    Str key;
    p = skip_ws(p + 1, e);
    if (p >= e || *p != '"' || (p = scan_string(p, e, &key)) == NULL || !str_is(&key, "#text"))
        return NULL;
    p = skip_ws(p, e);
    if (p >= e || *p != ':') return NULL;
    p = skip_ws(p + 1, e);
    int list = p < e && *p == '[';
    if (list) p = skip_ws(p + 1, e);
    for (;;) {
        char name[24];
        int n = snprintf(name, sizeof name, "Data_%d", w->unnamed++);
        size_t start = key_begin(w);
        put(w, name, (size_t)n);
        if (key_end(w, start) < 0) return NULL;
        put(w, "\"", 1);
        if ((p = put_text(w, p, e, 1)) == NULL) return NULL;
        put(w, "\"", 1);
        p = skip_ws(p, e);
        if (!list || p >= e || *p != ',') break;
        p = skip_ws(p + 1, e);
    }
    if (list) {
        if (p >= e || *p != ']') return NULL;
        p = skip_ws(p + 1, e);
    }
    return p < e && *p == '}' ? p + 1 : NULL;
}

static int is_text_or_int(const char *p, const char *e) {
    return p < e && (*p == '"' || *p == '-' || (*p >= '0' && *p <= '9'));
}

/* The members of EventData (`event_data`) or of a UserData wrapper element, p at '{'
 * (parsers/evtx_payload.py _event_data, _user_data): each an element under its key; in
 * EventData an element with a Name attribute under that name, unnamed Data values as
 * Data_0.., and an "#attributes" member of text or an integer a key like any other. */
static const char *put_members(Writer *w, const char *p, const char *e, int event_data) {
    Str key, names[MAX_CHILDREN], path[MAX_DEPTH_PAYLOAD + 2];
    uint64_t hashes[MAX_CHILDREN];
    int n = 0;
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (!key.canonical || n == MAX_CHILDREN) return NULL;
        uint64_t hash = text_hash(key.start, (size_t)(key.end - key.start));
        for (int i = 0; i < n; i++)
            if (hashes[i] == hash && same_text(&names[i], &key)) return NULL; /* written twice */
        hashes[n] = hash;
        names[n++] = key;
        path[0] = key;
        if (str_is(&key, "#attributes") && !(event_data && is_text_or_int(p, e))) {
            p = skip_value(p, e, 4);
        } else if (str_is(&key, "#text")) {
            return NULL;
        } else if (event_data && str_is(&key, "Data") && p < e && *p == '{') {
            p = put_unnamed(w, p, e);
        } else if (event_data && p < e && *p == '{') {
            int named;
            if (element_name(p, e, &path[0], &named) == NULL) return NULL;
            p = put_element(w, path, 1, p, e, named);
        } else {
            p = put_element(w, path, 1, p, e, 0);
        }
    });
    return p;
}

/* UserData (p at '{'): "#attributes" members skipped, one wrapper element whose
 * children are written (or a value, written under the wrapper's name). */
static const char *put_user_data(Writer *w, const char *p, const char *e) {
    int wrappers = 0;
    Str key, path[1];
    FOR_MEMBERS(p, e, key, key_at, 1, {
        if (str_is(&key, "#attributes")) {
            p = skip_value(p, e, 4);
        } else {
            if (wrappers++ || !key.canonical) return NULL;
            path[0] = key;
            p = p < e && *p == '{' ? put_members(w, p, e, 0) : put_value(w, path, 1, p, e);
        }
    });
    return p;
}

/* One payload section (p at its value) written to the data column; returns the end of
 * the section, or NULL when it holds a shape left to Python (the column is then as it
 * was, and the caller scans the section again to skip it). */
static const char *emit_section(const char *p, const char *e, Record *r, int user_data) {
    Writer w;
    w.c = r->data;
    w.n = w.unnamed = w.nomem = 0;
    size_t mark = w.c->size;
    if (reserve(w.c, (size_t)(e - p) * 2 + 16) < 0) /* most sections fit: one check */
        w.nomem = 1;
    const char *end;
    if (p < e && *p == 'n') {
        end = skip_literal(p, e, "null");
        if (end != NULL) put(&w, "{}", 2);
    } else if (p < e && *p == '{') {
        put(&w, "{", 1);
        end = user_data ? put_user_data(&w, p, e) : put_members(&w, p, e, 1);
        put(&w, "}", 1);
    } else {
        end = NULL;
    }
    if (w.nomem) r->nomem = 1;
    if (end == NULL || w.nomem) {
        w.c->size = mark;
        return NULL;
    }
    return end;
}

static const char *parse_event(const char *p, const char *e, Record *r) {
    if (p >= e || *p != '{') return NULL;
    Str key;
    int system_seen = 0, data_seen = 0, user_seen = 0, errors_seen = 0;
    FOR_MEMBERS(p, e, key, key_at, 0, {
        if (str_is(&key, "System")) {
            if (system_seen++) return NULL;
            p = parse_system(p, e, r);
        } else if (str_is(&key, "EventData") || str_is(&key, "UserData") ||
                   str_is(&key, "ProcessingErrorData")) {
            int *seen = key.end - key.start == 9 ? &data_seen
                        : key.end - key.start == 8 ? &user_seen : &errors_seen;
            if ((*seen)++) return NULL;
            r->payload_sections++;
            const char *end = NULL;
            if (seen != &errors_seen) {
                end = emit_section(p, e, r, seen == &user_seen);
                if (r->nomem) return NULL;
                r->written = end != NULL;
            }
            p = end != NULL ? end : skip_value(p, e, 2);
        } else {
            p = skip_value(p, e, 2);
        }
    });
    return p;
}

/* The whole record: {"Event": {...}} and nothing after it. */
static const char *parse_root(const char *p, const char *e, Record *r, int *event_seen) {
    Str key;
    FOR_MEMBERS(p, e, key, key_at, 0, {
        if (str_is(&key, "Event")) {
            if ((*event_seen)++) return NULL;
            p = parse_event(p, e, r);
        } else {
            p = skip_value(p, e, 1);
        }
    });
    return p;
}

/* 1: the record has the shape this module understands, fully scanned into `r`. */
static int parse_record(const char *p, const char *e, Record *r, Column *data) {
    memset(r, 0, sizeof(*r));
    r->data = data;
    r->data_mark = data->size;
    int event_seen = 0;
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return 0;
    p = parse_root(p, e, r, &event_seen);
    return p != NULL && event_seen && skip_ws(p, e) == e;
}

/* ---- writing a row */

static void set_valid(Column *c, int64_t row) { c->valid[row >> 3] |= (uint8_t)(1u << (row & 7)); }

static void put_null(Column *c, int64_t row) {
    c->nulls++;
    if (c->kind == K_STR) c->offsets[row + 1] = (int64_t)c->size;
    else c->values[row] = 0;
}

static void put_int(Column *c, int64_t row, const OptInt *v) {
    if (!int_present(v)) {
        put_null(c, row);
        return;
    }
    c->values[row] = v->v;
    set_valid(c, row);
}

static void put_utf8(Column *c, unsigned v) {
    char *o = c->data + c->size;
    if (v < 0x80) {
        o[0] = (char)v;
        c->size += 1;
    } else if (v < 0x800) {
        o[0] = (char)(0xC0 | (v >> 6));
        o[1] = (char)(0x80 | (v & 0x3F));
        c->size += 2;
    } else if (v < 0x10000) {
        o[0] = (char)(0xE0 | (v >> 12));
        o[1] = (char)(0x80 | ((v >> 6) & 0x3F));
        o[2] = (char)(0x80 | (v & 0x3F));
        c->size += 3;
    } else {
        o[0] = (char)(0xF0 | (v >> 18));
        o[1] = (char)(0x80 | ((v >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((v >> 6) & 0x3F));
        o[3] = (char)(0x80 | (v & 0x3F));
        c->size += 4;
    }
}

/* A scanned string's decoded text appended (escapes already validated by scan_string). */
static int append_text(Column *c, const Str *s) {
    size_t n = (size_t)(s->end - s->start);
    if (reserve(c, n) < 0) return -1; /* decoding never makes text longer */
    if (!s->escaped) {
        memcpy(c->data + c->size, s->start, n);
        c->size += n;
        return 0;
    }
    const char *p = s->start;
    while (p < s->end) {
        if (*p != '\\') {
            c->data[c->size++] = *p++;
            continue;
        }
        char k = p[1];
        p += 2;
        switch (k) {
        case 'b': c->data[c->size++] = '\b'; break;
        case 'f': c->data[c->size++] = '\f'; break;
        case 'n': c->data[c->size++] = '\n'; break;
        case 'r': c->data[c->size++] = '\r'; break;
        case 't': c->data[c->size++] = '\t'; break;
        case 'u': {
            unsigned v, low;
            hex4(p, s->end, &v);
            p += 4;
            if (v >= 0xD800 && v <= 0xDBFF) {
                hex4(p + 2, s->end, &low);
                p += 6;
                v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
            }
            put_utf8(c, v);
            break;
        }
        default: c->data[c->size++] = k; /* " \ / */
        }
    }
    return 0;
}

static int put_str(Column *c, int64_t row, const OptStr *v) {
    if (!str_present(v)) {
        put_null(c, row);
        return 0;
    }
    if (append_text(c, &v->s) < 0) return -1;
    c->offsets[row + 1] = (int64_t)c->size;
    set_valid(c, row);
    return 0;
}

static int put_bytes(Column *c, int64_t row, const char *p, size_t n) {
    if (reserve(c, n) < 0) return -1;
    memcpy(c->data + c->size, p, n);
    c->size += n;
    c->offsets[row + 1] = (int64_t)c->size;
    set_valid(c, row);
    return 0;
}

static int py_space(char c) { /* ASCII characters Python's str.strip() removes */
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* parsers/evtx_rows.py _guid: strip, strip "{}", strip, lower, "{...}"; or null.
 * 0: written; 1: not plain ASCII, leave it to Python. */
static int guid_text(const OptStr *v, char *out, size_t *len) {
    *len = 0;
    if (!str_present(v)) return 0;
    if (v->s.escaped) return 1;
    const char *p = v->s.start, *e = v->s.end;
    for (const char *q = p; q < e; q++)
        if ((unsigned char)*q >= 0x80) return 1;
    while (p < e && py_space(*p)) p++;
    while (e > p && py_space(e[-1])) e--;
    while (p < e && (*p == '{' || *p == '}')) p++;
    while (e > p && (e[-1] == '{' || e[-1] == '}')) e--;
    while (p < e && py_space(*p)) p++;
    while (e > p && py_space(e[-1])) e--;
    if (e - p > 200) return 1;
    if (p == e) return 0;
    out[0] = '{';
    size_t n = 1;
    for (; p < e; p++) out[n++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
    out[n++] = '}';
    *len = n;
    return 0;
}

/* parsers/evtx_rows.py _keywords: int(text.strip(), 16) within [0, 2**64), else null.
 * 0: decided (*set tells null or not); 1: a form only Python's int() should judge. */
static int keywords_value(const OptStr *v, int *set, uint64_t *out) {
    *set = 0;
    if (!str_present(v)) return 0;
    if (v->s.escaped) return 1;
    const char *p = v->s.start, *e = v->s.end;
    for (const char *q = p; q < e; q++)
        if ((unsigned char)*q >= 0x80 || *q == '_' || *q == '+' || *q == '-') return 1;
    while (p < e && py_space(*p)) p++;
    while (e > p && py_space(e[-1])) e--;
    if (e - p >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) p += 2;
    if (p == e) return 0;
    uint64_t value = 0;
    int overflow = 0;
    for (; p < e; p++) {
        int h = hex_value(*p);
        if (h < 0) return 0; /* int() refuses it: null */
        if (value >> 60) overflow = 1;
        value = value * 16 + (uint64_t)h;
    }
    if (overflow) return 0;
    *set = 1;
    *out = value;
    return 0;
}

enum { ROW_DONE, ROW_PAYLOAD, ROW_RECORD, ROW_NOMEM };

/* One record into row `row` of the table. */
static int put_record(Table *t, int64_t row, int64_t header, const char *p, Py_ssize_t n) {
    Column *c = t->columns;
    Record r;
    int understood = parse_record(p, p + n, &r, &c[C_DATA]);
    if (r.nomem) return ROW_NOMEM;
    char guid[256];
    size_t guid_len = 0;
    int keywords_set = 0;
    uint64_t keywords = 0;
    if (understood && (guid_text(&r.provider.attrs.guid, guid, &guid_len) ||
                       keywords_value(&r.keywords, &keywords_set, &keywords)))
        understood = 0;
    c[C_HEADER].values[row] = header;
    set_valid(&c[C_HEADER], row);
    int payload = (r.written && r.payload_sections == 1) || r.payload_sections == 0;
    if (!understood || !payload)
        c[C_DATA].size = r.data_mark; /* nothing of this record stays in `data` */
    if (!understood) { /* every other column null: Python fills the row */
        for (int i = 0; i < N_COLUMNS; i++)
            if (i != C_HEADER) put_null(&c[i], row);
        return ROW_RECORD;
    }
    const Attrs *provider = &r.provider.attrs;
    int failed = put_str(&c[C_TIME], row, &r.time_created.attrs.system_time) |
                 put_str(&c[C_COMPUTER], row, &r.computer) |
                 put_str(&c[C_CHANNEL], row, &r.channel) |
                 put_str(&c[C_PROVIDER], row,
                         provider->name.set == 2 && provider->name.s.start != NULL
                             ? &provider->name : &provider->source_name) |
                 put_str(&c[C_USER_SID], row, &r.security.attrs.user_id);
    if (guid_len) failed |= put_bytes(&c[C_GUID], row, guid, guid_len);
    else put_null(&c[C_GUID], row);
    if (r.event_id_element.set == 1) {
        put_int(&c[C_EVENT_ID], row, &r.event_id_element.text);
        put_int(&c[C_QUALIFIERS], row, &r.event_id_element.attrs.qualifiers);
    } else {
        put_int(&c[C_EVENT_ID], row, &r.event_id);
        put_null(&c[C_QUALIFIERS], row);
    }
    put_int(&c[C_VERSION], row, &r.version);
    put_int(&c[C_LEVEL], row, &r.level);
    put_int(&c[C_TASK], row, &r.task);
    put_int(&c[C_OPCODE], row, &r.opcode);
    if (keywords_set) {
        c[C_KEYWORDS].values[row] = (int64_t)keywords;
        set_valid(&c[C_KEYWORDS], row);
    } else {
        put_null(&c[C_KEYWORDS], row);
    }
    put_int(&c[C_RECORD_ID], row, &r.record_id);
    put_int(&c[C_PID], row, &r.execution.attrs.process_id);
    put_int(&c[C_TID], row, &r.execution.attrs.thread_id);
    if (failed) return ROW_NOMEM;
    if (payload) {
        if (r.payload_sections == 0 && put_bytes(&c[C_DATA], row, "{}", 2) < 0) return ROW_NOMEM;
        c[C_DATA].offsets[row + 1] = (int64_t)c[C_DATA].size;
        set_valid(&c[C_DATA], row);
        return ROW_DONE;
    }
    put_null(&c[C_DATA], row);
    return ROW_PAYLOAD;
}

/* ---- Arrow export
 * Each child array owns its column's buffers (a consumer may move a child out and release
 * it apart from its parent, as the C data interface allows); the parent owns the child
 * structs and releases the children still held. */

typedef struct {
    const void *buffers[3];
    Column column;
} ChildPrivate;

typedef struct {
    const void *buffers[1];
    struct ArrowArray children[N_COLUMNS];
    struct ArrowArray *child_pointers[N_COLUMNS];
} ArrayPrivate;

static void release_child(struct ArrowArray *a) {
    ChildPrivate *priv = a->private_data;
    free(priv->column.valid);
    free(priv->column.values);
    free(priv->column.offsets);
    free(priv->column.data);
    free(priv);
    a->release = NULL;
}

static void release_array(struct ArrowArray *a) {
    ArrayPrivate *priv = a->private_data;
    for (int i = 0; i < N_COLUMNS; i++)
        if (priv->children[i].release) priv->children[i].release(&priv->children[i]);
    free(priv);
    a->release = NULL;
}

static void release_schema(struct ArrowSchema *s) {
    if (s->children != NULL) {
        for (int64_t i = 0; i < s->n_children; i++) free(s->children[i]);
        free(s->children);
    }
    s->release = NULL;
}

static void release_child_schema(struct ArrowSchema *s) { s->release = NULL; }

static void schema_capsule_free(PyObject *capsule) {
    struct ArrowSchema *s = PyCapsule_GetPointer(capsule, "arrow_schema");
    if (s != NULL) {
        if (s->release) s->release(s);
        free(s);
    }
}

static void array_capsule_free(PyObject *capsule) {
    struct ArrowArray *a = PyCapsule_GetPointer(capsule, "arrow_array");
    if (a != NULL) {
        if (a->release) a->release(a);
        free(a);
    }
}

static const char *format_of(int kind) {
    return kind == K_STR ? "U" : kind == K_I64 ? "l" : "L";
}

static struct ArrowSchema *export_schema(void) {
    struct ArrowSchema *s = calloc(1, sizeof(*s));
    if (s == NULL) return NULL;
    s->format = "+s";
    s->name = "";
    s->n_children = N_COLUMNS;
    s->children = calloc(N_COLUMNS, sizeof(struct ArrowSchema *));
    s->release = release_schema;
    if (s->children == NULL) goto fail;
    for (int i = 0; i < N_COLUMNS; i++) {
        struct ArrowSchema *child = calloc(1, sizeof(*child));
        if (child == NULL) goto fail;
        child->format = format_of(COLUMNS[i].kind);
        child->name = COLUMNS[i].name;
        child->flags = ARROW_FLAG_NULLABLE;
        child->release = release_child_schema;
        s->children[i] = child;
    }
    return s;
fail:
    release_schema(s);
    free(s);
    return NULL;
}

/* The table's columns move into the returned array; the table is freed. */
/* A buffer cut down to the bytes in use. polars keeps numeric buffers as they come, so
 * the room a table has not filled (its first 256 rows, up to half of it after doubling)
 * stays pinned as long as the frame lives: 200 one-record batches held 67 MB of RSS
 * without the cut, 59 MB with it. Tables start small (table_grow) for the bigger part. */
static void *shrunk(void *buffer, size_t used) {
    void *smaller = realloc(buffer, used > 0 ? used : 1);
    return smaller != NULL ? smaller : buffer; /* a failed shrink keeps the larger one */
}

static void table_shrink(Table *t) {
    size_t rows = (size_t)t->rows;
    for (int i = 0; i < N_COLUMNS; i++) {
        Column *c = &t->columns[i];
        c->valid = shrunk(c->valid, rows / 8 + 1);
        if (c->kind == K_STR) {
            c->offsets = shrunk(c->offsets, (rows + 1) * sizeof(int64_t));
            c->data = shrunk(c->data, c->size);
            c->capacity = c->size > 0 ? c->size : 1;
        } else {
            c->values = shrunk(c->values, (rows + 1) * sizeof(int64_t));
        }
    }
}

static struct ArrowArray *export_array(Table *t) {
    struct ArrowArray *a = calloc(1, sizeof(*a));
    ArrayPrivate *priv = calloc(1, sizeof(*priv));
    ChildPrivate *kids[N_COLUMNS] = {NULL};
    if (a == NULL || priv == NULL) goto fail;
    for (int i = 0; i < N_COLUMNS; i++)
        if ((kids[i] = calloc(1, sizeof(ChildPrivate))) == NULL) goto fail;
    if (t->rows < t->capacity) table_shrink(t);
    for (int i = 0; i < N_COLUMNS; i++) {
        Column *c = &t->columns[i];
        ChildPrivate *kid = kids[i];
        struct ArrowArray *child = &priv->children[i];
        kid->column = *c;
        memset(c, 0, sizeof(*c)); /* the child owns the buffers now */
        kid->buffers[0] = kid->column.valid;
        if (kid->column.kind == K_STR) {
            kid->buffers[1] = kid->column.offsets;
            kid->buffers[2] = kid->column.data;
            child->n_buffers = 3;
        } else {
            kid->buffers[1] = kid->column.values;
            child->n_buffers = 2;
        }
        child->length = t->rows;
        child->null_count = kid->column.nulls;
        child->buffers = kid->buffers;
        child->private_data = kid;
        child->release = release_child;
        priv->child_pointers[i] = child;
    }
    a->length = t->rows;
    a->n_buffers = 1;
    a->buffers = priv->buffers;
    a->n_children = N_COLUMNS;
    a->children = priv->child_pointers;
    a->private_data = priv;
    a->release = release_array;
    table_free(t);
    return a;
fail:
    for (int i = 0; i < N_COLUMNS; i++) free(kids[i]);
    free(priv);
    free(a);
    return NULL;
}

/* ---- the Python type: one scanned batch */

typedef struct {
    PyObject_HEAD
    Table *table;       /* NULL once exported */
    int64_t rows;
    PyObject *fallback; /* list of (row, kind, header id, data): rows Python must finish */
    PyObject *error;    /* the exception the iterator raised, or None */
    int exhausted;
} Batch;

static void batch_dealloc(Batch *self) {
    table_free(self->table);
    Py_XDECREF(self->fallback);
    Py_XDECREF(self->error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *batch_arrow(Batch *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", names, &requested)) return NULL;
    if (self->table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a scanned batch is exported once");
        return NULL;
    }
    struct ArrowSchema *schema = export_schema();
    if (schema == NULL) return PyErr_NoMemory();
    PyObject *schema_capsule = PyCapsule_New(schema, "arrow_schema", schema_capsule_free);
    if (schema_capsule == NULL) {
        schema->release(schema);
        free(schema);
        return NULL;
    }
    struct ArrowArray *array = export_array(self->table);
    if (array == NULL) {
        Py_DECREF(schema_capsule);
        return PyErr_NoMemory();
    }
    self->table = NULL;
    PyObject *array_capsule = PyCapsule_New(array, "arrow_array", array_capsule_free);
    if (array_capsule == NULL) {
        array->release(array);
        free(array);
        Py_DECREF(schema_capsule);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, schema_capsule, array_capsule);
    Py_DECREF(schema_capsule);
    Py_DECREF(array_capsule);
    return pair;
}

static PyObject *batch_len_get(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->rows);
}
static PyObject *batch_fallback_get(Batch *self, void *closure) {
    (void)closure;
    Py_INCREF(self->fallback);
    return self->fallback;
}
static PyObject *batch_error_get(Batch *self, void *closure) {
    (void)closure;
    Py_INCREF(self->error);
    return self->error;
}
static PyObject *batch_exhausted_get(Batch *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->exhausted);
}

static PyMethodDef batch_methods[] = {
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))batch_arrow, METH_VARARGS | METH_KEYWORDS,
     "The batch's columns as an Arrow struct array (the Arrow PyCapsule interface)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef batch_getset[] = {
    {"rows", (getter)batch_len_get, NULL, "Records in the batch.", NULL},
    {"fallback", (getter)batch_fallback_get, NULL,
     "(row, 'record' | 'payload', header id, json text) for each row Python must finish.", NULL},
    {"error", (getter)batch_error_get, NULL,
     "The exception the records iterator raised (the batch ends there), or None.", NULL},
    {"exhausted", (getter)batch_exhausted_get, NULL, "The iterator has no more records.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parsers._evtx_scan.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One batch of scanned records: Arrow columns plus the rows Python must finish.",
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_methods = batch_methods,
    .tp_getset = batch_getset,
};

static PyObject *KEY_ID, *KEY_DATA, *KIND_RECORD, *KIND_PAYLOAD;

static int add_fallback(PyObject *list, int64_t row, PyObject *kind, PyObject *id,
                        PyObject *data) {
    PyObject *index = PyLong_FromLongLong(row);
    if (index == NULL) return -1;
    PyObject *item = PyTuple_Pack(4, index, kind, id, data);
    Py_DECREF(index);
    if (item == NULL) return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/* ---- writing rows beside the iterator
 *
 * Pulling a record from pyevtx-rs needs the GIL and costs about as much as writing its
 * row; writing a row needs no Python at all (the record's UTF-8 text is immutable and
 * held).  So once a batch proves longer than THREAD_AFTER records, a second thread writes
 * the rows while this one pulls the next records: a read then takes about as long as
 * pyevtx-rs alone, on a machine with a core to spare.  The two share a ring of RING
 * pulled records; the puller keeps every record alive until its row is written and then
 * hands back what Python must finish, in row order, so the batch is the same either way
 * (tests/test_evtx_scan.py scans every case both ways).  Without POSIX threads the rows
 * are written by the puller, as before. */

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HAVE_WRITER_THREAD 1
#else
#define HAVE_WRITER_THREAD 0
#endif

#define RING 2048       /* pulled records held at most (a record's text is ~1-2 KB) */
#define HAND_OVER 64    /* records pulled between two hand-overs to the writer */
#define THREAD_AFTER 512 /* a batch this long starts a writer thread */

typedef struct {
    PyObject *record; /* record, id and data held until the row is reaped: an iterator */
    PyObject *id, *data; /* may reuse its dict and replace their values meanwhile */
    int64_t header;
    const char *text; /* the record's UTF-8, or NULL: every column null, Python reads it */
    Py_ssize_t n;
    int outcome;
} Pulled;

typedef struct {
    Table *t;
    Pulled ring[RING];
    int64_t limit;     /* rows the batch may hold */
    int64_t pulled;    /* puller only */
    int64_t reaped;    /* puller only: rows whose outcome was handed to Python */
    int64_t published; /* rows the writer may write (under `lock` once threaded) */
    int64_t written;   /* rows written (under `lock` once threaded) */
    int nomem;         /* under `lock` once threaded */
    int threaded, closing, writer_waits, puller_waits;
#if HAVE_WRITER_THREAD
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t more, progress; /* rows published / rows written */
#endif
} Scan;

/* Rows from..to-1 into the table; 0 if memory ran out (the rest is not written). */
static int write_rows(Scan *s, int64_t from, int64_t to) {
    Table *t = s->t;
    for (int64_t i = from; i < to; i++) {
        Pulled *item = &s->ring[i % RING];
        int64_t row = t->rows;
        int64_t grown = row * 2 < s->limit ? row * 2 : s->limit;
        if (row == t->capacity && table_grow(t, grown) < 0) return 0;
        if (item->text == NULL) {
            for (int c = 0; c < N_COLUMNS; c++) put_null(&t->columns[c], row);
            item->outcome = -1;
        } else {
            item->outcome = put_record(t, row, item->header, item->text, item->n);
            if (item->outcome == ROW_NOMEM) return 0;
        }
        t->rows++;
    }
    return 1;
}

#if HAVE_WRITER_THREAD
static void *writer(void *arg) {
    Scan *s = arg;
    pthread_mutex_lock(&s->lock);
    int64_t next = s->written; /* the puller may have written the first rows itself */
    for (;;) {
        int64_t upto = s->published;
        if (next == upto) {
            if (s->closing) break;
            s->writer_waits = 1;
            pthread_cond_wait(&s->more, &s->lock);
            s->writer_waits = 0;
            continue;
        }
        int nomem = s->nomem;
        pthread_mutex_unlock(&s->lock);
        int ok = nomem || write_rows(s, next, upto);
        pthread_mutex_lock(&s->lock);
        next = s->written = upto;
        if (!ok) s->nomem = 1;
        if (s->puller_waits) pthread_cond_signal(&s->progress);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}
#endif

/* The rows pulled so far may be written; without a thread they are written now. */
static void hand_over(Scan *s) {
#if HAVE_WRITER_THREAD
    if (s->threaded) {
        pthread_mutex_lock(&s->lock);
        s->published = s->pulled;
        if (s->writer_waits) pthread_cond_signal(&s->more);
        pthread_mutex_unlock(&s->lock);
        return;
    }
#endif
    if (!s->nomem && !write_rows(s, s->written, s->pulled)) s->nomem = 1;
    s->published = s->written = s->pulled;
}

/* Rows written so far (waits, without the GIL, until at least `need` are). */
static int64_t written_rows(Scan *s, int64_t need) {
#if HAVE_WRITER_THREAD
    if (s->threaded) {
        pthread_mutex_lock(&s->lock);
        if (s->written < need) {
            Py_BEGIN_ALLOW_THREADS
            s->puller_waits = 1;
            while (s->written < need) pthread_cond_wait(&s->progress, &s->lock);
            s->puller_waits = 0;
            Py_END_ALLOW_THREADS
        }
        int64_t written = s->written;
        pthread_mutex_unlock(&s->lock);
        return written;
    }
#endif
    (void)need;
    return s->written;
}

static void start_writer(Scan *s) {
#if HAVE_WRITER_THREAD
    if (pthread_mutex_init(&s->lock, NULL) != 0) return;
    if (pthread_cond_init(&s->more, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        return;
    }
    if (pthread_cond_init(&s->progress, NULL) != 0) {
        pthread_cond_destroy(&s->more);
        pthread_mutex_destroy(&s->lock);
        return;
    }
    if (pthread_create(&s->thread, NULL, writer, s) != 0) { /* the puller writes, as before */
        pthread_cond_destroy(&s->progress);
        pthread_cond_destroy(&s->more);
        pthread_mutex_destroy(&s->lock);
        return;
    }
    s->threaded = 1;
#else
    (void)s;
#endif
}

/* Everything pulled is written and the writer, if any, has ended. */
static void stop_writer(Scan *s) {
    hand_over(s);
#if HAVE_WRITER_THREAD
    if (!s->threaded) return;
    pthread_mutex_lock(&s->lock);
    s->closing = 1;
    if (s->writer_waits) pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->lock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(s->thread, NULL);
    Py_END_ALLOW_THREADS
    pthread_cond_destroy(&s->progress);
    pthread_cond_destroy(&s->more);
    pthread_mutex_destroy(&s->lock);
    s->threaded = 0;
#endif
}

/* Rows up to `upto` written: what Python must finish goes to the batch, in row order, and
 * their records are let go.  After a failure (`keep` 0) they are only let go. */
static int reap(Scan *s, Batch *batch, int64_t upto, int keep) {
    int failed = 0;
    for (; s->reaped < upto; s->reaped++) {
        Pulled *item = &s->ring[s->reaped % RING];
        if (keep && !failed && item->outcome != ROW_DONE && item->outcome != ROW_NOMEM) {
            PyObject *kind = item->outcome == ROW_PAYLOAD ? KIND_PAYLOAD : KIND_RECORD;
            failed = add_fallback(batch->fallback, s->reaped, kind, item->id, item->data);
        }
        Py_CLEAR(item->id);
        Py_CLEAR(item->data);
        Py_CLEAR(item->record);
    }
    return failed ? -1 : 0;
}

/* One record from the iterator into the ring: 1 pulled, 0 the iterator ended (its error,
 * if any, kept in the batch), -1 a Python error. */
static int pull(Scan *s, Batch *batch, PyObject *records) {
    PyObject *record = PyIter_Next(records);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (traceback != NULL) PyException_SetTraceback(value, traceback);
            Py_XDECREF(type);
            Py_XDECREF(traceback);
            Py_DECREF(batch->error);
            batch->error = value != NULL ? value : Py_None;
            if (value == NULL) Py_INCREF(Py_None);
        }
        batch->exhausted = 1;
        return 0;
    }
    PyObject *id = PyDict_Check(record) ? PyDict_GetItemWithError(record, KEY_ID) : NULL;
    PyObject *data = PyDict_Check(record) ? PyDict_GetItemWithError(record, KEY_DATA) : NULL;
    if (id == NULL || data == NULL || !PyLong_Check(id) || !PyUnicode_Check(data)) {
        Py_DECREF(record);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "not a pyevtx-rs records_json() record");
        return -1;
    }
    int overflow = 0;
    long long header = PyLong_AsLongLongAndOverflow(id, &overflow);
    Py_ssize_t n = 0;
    const char *text = overflow ? NULL : PyUnicode_AsUTF8AndSize(data, &n);
    if (text == NULL) PyErr_Clear(); /* a header id beyond int64, or a lone surrogate */
    Py_INCREF(id);
    Py_INCREF(data);
    Pulled *item = &s->ring[s->pulled % RING];
    *item = (Pulled){record, id, data, header, text, n, ROW_DONE};
    s->pulled++;
    return 1;
}

static PyObject *scan(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *records, *at_record = Py_None;
    Py_ssize_t limit, thread_after = THREAD_AFTER;
    if (!PyArg_ParseTuple(args, "On|On", &records, &limit, &at_record, &thread_after))
        return NULL;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be at least 1");
        return NULL;
    }
    Batch *batch = PyObject_New(Batch, &BatchType);
    if (batch == NULL) return NULL;
    batch->table = table_new(limit < FIRST_ROWS ? limit : FIRST_ROWS);
    batch->fallback = PyList_New(0);
    batch->error = Py_None;
    Py_INCREF(Py_None);
    batch->exhausted = 0;
    batch->rows = 0;
    Scan *s = calloc(1, sizeof(Scan));
    if (batch->table == NULL || batch->fallback == NULL || s == NULL) {
        free(s);
        Py_DECREF(batch);
        return PyErr_NoMemory();
    }
    s->t = batch->table;
    s->limit = limit;
    int failed = 0, started = 0;
    while (s->pulled < limit) {
        if (s->pulled - s->reaped == RING) { /* the ring is full: let written rows go */
            hand_over(s);
            int64_t written = written_rows(s, s->reaped + HAND_OVER);
            if ((failed = reap(s, batch, written, 1)) != 0) break;
        }
        int got = pull(s, batch, records);
        if (got <= 0) {
            failed = got < 0;
            break;
        }
        if ((s->pulled & 255) == 0 && at_record != Py_None) {
            PyObject *said = PyObject_CallOneArg(at_record, s->ring[(s->pulled - 1) % RING].id);
            Py_XDECREF(said);
            if ((failed = said == NULL) != 0) break;
        }
        if (!started && s->pulled >= thread_after && s->pulled < limit) {
            started = 1;
            start_writer(s);
        }
        if (s->threaded && s->pulled % HAND_OVER == 0) hand_over(s);
    }
    stop_writer(s);
    int nomem = s->nomem;
    if (!failed && !nomem) failed = reap(s, batch, s->pulled, 1);
    reap(s, batch, s->pulled, 0);
    batch->rows = s->t->rows;
    free(s);
    if (failed || nomem) {
        Py_DECREF(batch);
        return nomem && !failed ? PyErr_NoMemory() : NULL;
    }
    return (PyObject *)batch;
}

static PyMethodDef module_methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(records, limit, at_record=None, thread_after=512) -> Batch: up to `limit` records "
     "from a pyevtx-rs records_json() iterator, scanned into Arrow columns; `at_record(header "
     "id)` is called every 256 records (progress); a batch longer than `thread_after` records "
     "is written by a second thread while this one pulls (0: from the first record)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "parsers._evtx_scan",
    "pyevtx-rs records -> Arrow columns (used by parsers/evtx_reader.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

#ifndef SCAN_SOURCE
#define SCAN_SOURCE "unknown" /* built by hand, not by setup.py */
#endif

PyMODINIT_FUNC PyInit__evtx_scan(void) {
    if (PyType_Ready(&BatchType) < 0) return NULL;
    KEY_ID = PyUnicode_InternFromString("event_record_id");
    KEY_DATA = PyUnicode_InternFromString("data");
    KIND_RECORD = PyUnicode_InternFromString("record");
    KIND_PAYLOAD = PyUnicode_InternFromString("payload");
    if (KEY_ID == NULL || KEY_DATA == NULL || KIND_RECORD == NULL || KIND_PAYLOAD == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE", SCAN_SOURCE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
