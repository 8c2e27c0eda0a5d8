/* Fuzz harness: the control channel's parsers (tools/ctl.h), both sides.
 * The first byte of the input picks the parser, the rest is its input:
 *   0  a request, as the plugin splits it (ctl_split_req), and the size
 *      argument of create and resize (ctl_size)
 *   1  a reply's errno and message (ctl_split_reply), as the CLI reads it:
 *      an errno that is not a number from 0 to 4095 must read as EPROTO
 *   2  an info answer (ctl_get_info): one that parses must print
 *      (ctl_put_info) to a text that parses to the same figures
 *   3  a list answer (ctl_get_list): likewise with ctl_put_list
 * Requests are copied to a buffer of their exact size (no NUL after
 * them), so that ASan sees a read past the end. */
#include "../tools/ctl.h"

#include <stdlib.h>

static void differ(const char *in, const char *out)
{
	fprintf(stderr, "parsed and printed back, parses differently:\n%s\nvs\n%s\n", in, out);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > CTL_MAX + 64)
		return 0;
	size_t n = size - 1;
	char *s = malloc(n + 1);
	char *out = NULL;
	size_t on = 0;
	FILE *f;
	if (!s)
		abort();
	memcpy(s, data + 1, n);
	s[n] = 0;
	switch (data[0] & 3) {
	case 0: {
		const char *fl[CTL_FIELDS];
		int nf;
		uint64_t v;
		char *req = malloc(n ? n : 1);
		if (!req)
			abort();
		memcpy(req, data + 1, n);
		if (!ctl_split_req(req, n, fl, &nf)) {
			for (int i = 0; i < nf; i++)
				if (strlen(fl[i]) >= (size_t)(req + n - fl[i]))
					abort();
			if (nf >= 3)
				ctl_size(fl[2], &v);
		}
		free(req);
		break;
	}
	case 1: {
		/* An errno that is not a number from 0 to 4095 reads as EPROTO. */
		int e, digit = s[0] >= '0' && s[0] <= '9';
		if (!ctl_split_reply(s, &e) && (e < 0 || e > 4095 || (!digit && e != EPROTO)))
			abort();
		break;
	}
	case 2: {
		struct vbas_pool_info i;
		if (!ctl_get_info(s, &i) && (f = open_memstream(&out, &on))) {
			struct vbas_pool_info j;
			ctl_put_info(f, &i);
			fclose(f);
			if (ctl_get_info(out, &j) || memcmp(&i, &j, sizeof(i)))
				differ(s, out);
			free(out);
		}
		break;
	}
	default: {
		struct vol_list l = { 0 };
		if (!ctl_get_list(s, &l) && (f = open_memstream(&out, &on))) {
			struct vol_list m = { 0 };
			ctl_put_list(f, &l);
			fclose(f);
			if (ctl_get_list(out, &m) || m.n != l.n)
				differ(s, out);
			for (size_t i = 0; i < l.n; i++)
				if (memcmp(&l.v[i], &m.v[i], sizeof(l.v[i])) ||
				    memcmp(&l.u[i], &m.u[i], sizeof(l.u[i])))
					differ(s, out);
			vol_list_free(&m);
			free(out);
		}
		vol_list_free(&l);
		break;
	}
	}
	free(s);
	return 0;
}
