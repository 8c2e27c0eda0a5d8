/* JSON strings, shared by the CLI and the nbdkit plugin's event lines. */
#ifndef VBAS_JSON_H
#define VBAS_JSON_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../lib/utf8.h"

/* S as a JSON string.  Bytes that are not valid UTF-8 come out as \u00XX
 * (the code point of the byte's Latin-1 reading). */
static inline void json_str(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);
	fputc('"', f);
	while (n) {
		size_t l = utf8_len(s, n);
		if (l == 0) {
			fprintf(f, "\\u%04x", s[0]);
			l = 1;
		} else if (l > 1) {
			fwrite(s, 1, l, f);
		} else if (*s == '"' || *s == '\\') {
			fprintf(f, "\\%c", *s);
		} else if (*s == '\n') {
			fputs("\\n", f);
		} else if (*s == '\t') {
			fputs("\\t", f);
		} else if (*s < 0x20 || *s == 0x7f) {
			fprintf(f, "\\u%04x", *s);
		} else {
			fputc(*s, f);
		}
		s += l;
		n -= l;
	}
	fputc('"', f);
}

#endif
