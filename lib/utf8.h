/* UTF-8: what a volume name must be (every front end carries it: NBD
 * export names are UTF-8, JSON strings are), shared by the library and
 * the JSON writer of the CLI and the plugin. */
#ifndef VBAS_UTF8_H
#define VBAS_UTF8_H

#include <stddef.h>
#include <stdint.h>

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

/* The code point of the valid sequence of length LEN at S. */
static inline uint32_t utf8_cp(const unsigned char *s, size_t len)
{
	static const unsigned char lead[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	uint32_t c = s[0] & lead[len];
	for (size_t i = 1; i < len; i++)
		c = (c << 6) | (s[i] & 0x3f);
	return c;
}

#endif
