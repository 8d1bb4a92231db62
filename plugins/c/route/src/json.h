// A small JSON reader for plugin configs: objects, strings, non-negative
// integers, null; enough for the throttle config, with errors that name the
// offending field.
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *p;
    const char *end;
    char error[256];
} json_t;

void json_init(json_t *j, const char *text, size_t len);
// Skips whitespace; true when the next byte is `c` (not consumed).
bool json_peek(json_t *j, char c);
// Consumes `c` after whitespace, or fails.
bool json_expect(json_t *j, char c, const char *field);
// Consumes `null` when it comes next; true if it did.
bool json_null(json_t *j);
// A string; *out is malloc'ed and NUL-terminated.
bool json_string(json_t *j, char **out, size_t *len, const char *field);
// A non-negative integer no larger than `max`.
bool json_uint(json_t *j, uint64_t max, uint64_t *out, const char *field);
// Iterates an object: call with *first = true, then until it returns false
// with no error; each true return leaves a malloc'ed *key and the parser at
// the value.
bool json_next_key(json_t *j, bool *first, char **key, const char *field);
// True when only whitespace is left.
bool json_at_end(json_t *j);
bool json_fail(json_t *j, const char *field, const char *what);

#endif
