/* JSON strings, shared by the CLI and the nbdkit plugin's event lines. */
#ifndef VBAS_JSON_H
#define VBAS_JSON_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at S (at most N bytes), 0 if none. */
static inline size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t c;
	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		len = 2, c = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, c = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		len = 4, c = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	/* No overlong forms, surrogates or code points past U+10FFFF. */
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	return len;
}

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
