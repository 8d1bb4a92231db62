#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(json_t *j, const char *text, size_t len) {
    j->p = text;
    j->end = text + len;
    j->error[0] = '\0';
}

bool json_fail(json_t *j, const char *field, const char *what) {
    if (j->error[0] == '\0') {
        if (field && field[0]) {
            snprintf(j->error, sizeof j->error, "%s: %s", field, what);
        } else {
            snprintf(j->error, sizeof j->error, "%s", what);
        }
    }
    return false;
}

static void skip_ws(json_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
}

bool json_peek(json_t *j, char c) {
    skip_ws(j);
    return j->p < j->end && *j->p == c;
}

bool json_expect(json_t *j, char c, const char *field) {
    if (!json_peek(j, c)) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return json_fail(j, field, what);
    }
    j->p++;
    return true;
}

bool json_null(json_t *j) {
    skip_ws(j);
    if (j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0) {
        j->p += 4;
        return true;
    }
    return false;
}

bool json_at_end(json_t *j) {
    skip_ws(j);
    return j->p == j->end;
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool json_string(json_t *j, char **out, size_t *len, const char *field) {
    if (!json_expect(j, '"', field)) {
        return json_fail(j, field, "expected a string");
    }
    // Escapes only ever shrink the text, so the raw length is enough.
    char *buf = malloc((size_t)(j->end - j->p) + 1);
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') {
            buf[n++] = c;
            continue;
        }
        if (j->p >= j->end) break;
        char e = *j->p++;
        switch (e) {
            case '"': case '\\': case '/': buf[n++] = e; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                unsigned cp = 0;
                for (int i = 0; i < 4; i++) {
                    int h = j->p < j->end ? hex(*j->p++) : -1;
                    if (h < 0) {
                        free(buf);
                        return json_fail(j, field, "bad \\u escape");
                    }
                    cp = cp * 16 + (unsigned)h;
                }
                // Basic multilingual plane only; config keys are ASCII.
                if (cp < 0x80) {
                    buf[n++] = (char)cp;
                } else if (cp < 0x800) {
                    buf[n++] = (char)(0xC0 | (cp >> 6));
                    buf[n++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    buf[n++] = (char)(0xE0 | (cp >> 12));
                    buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[n++] = (char)(0x80 | (cp & 0x3F));
                }
                break;
            }
            default:
                free(buf);
                return json_fail(j, field, "bad escape in string");
        }
    }
    if (j->p >= j->end) {
        free(buf);
        return json_fail(j, field, "unterminated string");
    }
    j->p++;
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return true;
}

bool json_uint(json_t *j, uint64_t max, uint64_t *out, const char *field) {
    skip_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') {
        return json_fail(j, field, "expected a non-negative integer");
    }
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        uint64_t d = (uint64_t)(*j->p++ - '0');
        if (v > (max - d) / 10) {
            return json_fail(j, field, "number too large");
        }
        v = v * 10 + d;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) {
        return json_fail(j, field, "expected a non-negative integer");
    }
    *out = v;
    return true;
}

bool json_next_key(json_t *j, bool *first, char **key, const char *field) {
    if (*first) {
        *first = false;
        if (!json_expect(j, '{', field)) {
            return json_fail(j, field, "expected an object");
        }
        if (json_peek(j, '}')) {
            j->p++;
            return false;
        }
    } else {
        if (json_peek(j, '}')) {
            j->p++;
            return false;
        }
        if (!json_expect(j, ',', field)) return false;
    }
    if (!json_string(j, key, NULL, field)) return false;
    if (!json_expect(j, ':', field)) {
        free(*key);
        return false;
    }
    return true;
}
