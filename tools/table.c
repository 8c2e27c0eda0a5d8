/* The CLI's tables, through libsmartcols (table.h). */
#include "table.h"

#include <errno.h>
#include <inttypes.h>
#include <libsmartcols.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned i = 0;
	double d = (double)v;
	while (d >= 1023.95 && i < 6) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " B", v);
	else
		snprintf(buf, len, "%.1f %s", d, units[i]);
	return buf;
}

static int find_col(const struct col_def *defs, int ndefs, const char *s, size_t n)
{
	for (int i = 0; i < ndefs; i++)
		if ((strlen(defs[i].name) == n && !strncasecmp(defs[i].name, s, n)) ||
		    (strlen(defs[i].json) == n && !strncmp(defs[i].json, s, n)))
			return i;
	return -1;
}

int table_open(struct table *tb, const char *rows, const struct col_def *defs, int ndefs,
	       const char *output, unsigned flags, char *why, size_t wlen)
{
	int order[TABLE_MAX_COLS], n = 0;
	memset(tb, 0, sizeof(*tb));
	tb->defs = defs;
	tb->ndefs = ndefs;
	tb->flags = flags;
	tb->rows = rows;
	tb->out = stdout;
	if (ndefs > TABLE_MAX_COLS) {
		snprintf(why, wlen, "too many columns");
		return -1;
	}
	for (int i = 0; i < ndefs; i++)
		tb->col[i] = -1;
	/* The defaults (JSON: every column), unless -o names its own. */
	if (!output || *output == '+')
		for (int i = 0; i < ndefs; i++)
			if (defs[i].dflt || (flags & TABLE_JSON))
				order[n++] = i;
	for (const char *s = output ? output + (*output == '+') : NULL; s && *s;) {
		size_t len = strcspn(s, ",");
		int c = find_col(defs, ndefs, s, len);
		if (c < 0) {
			size_t at = (size_t)snprintf(why, wlen, "unknown column '%.*s' (columns:",
						     (int)(len > 40 ? 40 : len), s);
			for (int i = 0; i < ndefs && at < wlen; i++)
				at += (size_t)snprintf(why + at, wlen - at, " %s", defs[i].name);
			if (at < wlen)
				snprintf(why + at, wlen - at, ")");
			return -1;
		}
		int dup = 0;
		for (int i = 0; i < n; i++)
			dup |= order[i] == c;
		if (!dup)
			order[n++] = c;
		s += len;
		if (*s == ',')
			s++;
	}
	if (!n) {
		snprintf(why, wlen, "no columns");
		return -1;
	}
	tb->t = scols_new_table();
	if (!tb->t) {
		snprintf(why, wlen, "%s", strerror(ENOMEM));
		return -1;
	}
	scols_table_set_name(tb->t, rows);
	scols_table_enable_json(tb->t, !!(flags & TABLE_JSON));
	scols_table_enable_raw(tb->t, !!(flags & TABLE_RAW));
	scols_table_enable_noheadings(tb->t, !!(flags & TABLE_NOHEADINGS));
	for (int i = 0; i < n; i++) {
		const struct col_def *d = &defs[order[i]];
		int right = d->type != COL_STR && d->type != COL_BOOL;
		struct libscols_column *cl = scols_table_new_column(
			tb->t, (flags & TABLE_JSON) ? d->json : d->name, 0,
			right ? SCOLS_FL_RIGHT : 0);
		if (!cl) {
			snprintf(why, wlen, "%s", strerror(ENOMEM));
			table_free(tb);
			return -1;
		}
		int jt = d->type == COL_STR ? SCOLS_JSON_STRING :
			 d->type == COL_BOOL ? SCOLS_JSON_BOOLEAN : SCOLS_JSON_NUMBER;
		scols_column_set_json_type(cl, jt);
		tb->col[order[i]] = i;
	}
	tb->ncols = n;
	return 0;
}

struct libscols_line *table_line(struct table *tb)
{
	return scols_table_new_line(tb->t, NULL);
}

/* The width of column DEF's cells in a streamed text table: what its
 * widest value takes. */
static int stream_width(const struct table *tb, int def)
{
	const struct col_def *d = &tb->defs[def];
	if (d->width)
		return d->width;
	switch (d->type) {
	case COL_NUM:
	case COL_OFFSET:
		return 20;
	case COL_SIZE:
		return (tb->flags & TABLE_BYTES) ? 20 : 10;
	case COL_PCT:
		return 6;
	case COL_BOOL: {
		int y = d->yes ? (int)strlen(d->yes) : 1, n = d->no ? (int)strlen(d->no) : 1;
		return y > n ? y : n;
	}
	default:
		return d->width;
	}
}

static int cell(struct table *tb, struct libscols_line *ln, int def, const char *s)
{
	if (!ln || def < 0 || def >= tb->ndefs)
		return -1;
	if (tb->col[def] < 0 || !s)
		return 0;
	/* (The last column is not padded: no blanks at the ends of lines.) */
	int w = (tb->flags & TABLE_STREAM) && !(tb->flags & (TABLE_JSON | TABLE_RAW)) &&
			tb->col[def] < tb->ncols - 1 ? stream_width(tb, def) : 0;
	if (w > (int)strlen(s)) {
		/* Padded as the column aligns: every chunk as wide as the first. */
		char b[64];
		int right = tb->defs[def].type != COL_STR && tb->defs[def].type != COL_BOOL;
		snprintf(b, sizeof(b), right ? "%*s" : "%-*s", w > 60 ? 60 : w, s);
		return scols_line_set_data(ln, (size_t)tb->col[def], b) ? -1 : 0;
	}
	return scols_line_set_data(ln, (size_t)tb->col[def], s) ? -1 : 0;
}

int table_str(struct table *tb, struct libscols_line *ln, int def, const char *s)
{
	return cell(tb, ln, def, s ? s : (tb->flags & TABLE_JSON) ? NULL : "-");
}

int table_none(struct table *tb, struct libscols_line *ln, int def)
{
	return cell(tb, ln, def, (tb->flags & TABLE_JSON) ? NULL : "-");
}

int table_u64(struct table *tb, struct libscols_line *ln, int def, uint64_t v)
{
	char b[32];
	if (tb->defs[def].type == COL_SIZE && !(tb->flags & (TABLE_JSON | TABLE_BYTES))) {
		human(v, b, sizeof(b));
		/* --raw separates columns by a blank: "2.0GiB" */
		char *sp = (tb->flags & TABLE_RAW) ? strchr(b, ' ') : NULL;
		if (sp)
			memmove(sp, sp + 1, strlen(sp));
	} else
		snprintf(b, sizeof(b), "%" PRIu64, v);
	return cell(tb, ln, def, b);
}

int table_bool(struct table *tb, struct libscols_line *ln, int def, int v)
{
	const struct col_def *d = &tb->defs[def];
	if (tb->flags & TABLE_JSON)
		return cell(tb, ln, def, v ? "1" : "0");
	return cell(tb, ln, def, v ? d->yes : d->no);
}

int table_pct(struct table *tb, struct libscols_line *ln, int def, uint64_t part,
	      uint64_t whole)
{
	char b[32];
	/* Tenths, rounded down, so that 100% means all of it. */
	uint64_t t = whole ? (uint64_t)((long double)part * 1000 / whole) : 0;
	snprintf(b, sizeof(b), "%" PRIu64 ".%" PRIu64 "%s", t / 10, t % 10,
		 (tb->flags & TABLE_JSON) ? "" : "%");
	return cell(tb, ln, def, b);
}

/* The rows of libsmartcols' JSON S ({"ROWS": [ROWS]}) into *AT, *LEN;
 * -1 if S is not that. */
static int json_rows(const char *s, const char **at, size_t *len)
{
	const char *open = strstr(s, "[\n"), *close = strrchr(s, ']');
	if (strncmp(s, "{\n", 2) || !open || !close || close < open)
		return -1;
	*at = open + 2;
	*len = (size_t)(close - *at);
	/* Only blanks: no rows. */
	if (strspn(*at, " \n") >= *len)
		*len = 0;
	return 0;
}

/* Print the lines the table holds, as chunk number tb->chunks of it;
 * LAST: the end of the table. */
static int print_chunk(struct table *tb, int last)
{
	FILE *f = tb->out;
	if (!(tb->flags & TABLE_JSON)) {
		if (tb->chunks && !tb->lines)
			return ferror(f) ? -1 : 0;
		if (tb->chunks)
			scols_table_enable_noheadings(tb->t, 1);
		scols_table_set_stream(tb->t, f);
		int r = scols_print_table(tb->t);
		scols_table_remove_lines(tb->t);
		tb->chunks++;
		tb->lines = 0;
		return r || ferror(f) ? -1 : 0;
	}
	/* libsmartcols writes {"ROWS": [...]}: the rows of each chunk go
	 * into one array, after the version key. */
	char *s = NULL;
	size_t n = 0;
	const char *rows;
	size_t rl;
	FILE *m = open_memstream(&s, &n);
	if (!m)
		return -1;
	scols_table_set_stream(tb->t, m);
	int r = scols_print_table(tb->t);
	scols_table_remove_lines(tb->t);
	if (fclose(m) || r || !s || json_rows(s, &rows, &rl)) {
		free(s);
		return -1;
	}
	if (!tb->chunks)
		fprintf(f, "{\n   \"vbas_format\": %d,\n   \"%s\": [\n", VBAS_JSON_FORMAT,
			tb->rows);
	if (rl) {
		/* (The rows end before the blanks that indent the bracket.) */
		while (rl && (rows[rl - 1] == ' ' || rows[rl - 1] == '\n'))
			rl--;
		fprintf(f, "%s%.*s", tb->any ? ",\n" : "", (int)rl, rows);
		tb->any = 1;
	}
	free(s);
	tb->chunks++;
	tb->lines = 0;
	if (last)
		fputs("\n   ]\n}\n", f);
	return ferror(f) ? -1 : 0;
}

int table_row_done(struct table *tb)
{
	if (!(tb->flags & TABLE_STREAM) || ++tb->lines < TABLE_CHUNK)
		return 0;
	return print_chunk(tb, 0) ? (tb->failed = 1, -1) : 0;
}

int table_print(struct table *tb, FILE *f)
{
	tb->out = f;
	if (tb->failed)
		return -1;
	return print_chunk(tb, 1);
}

void table_free(struct table *tb)
{
	if (tb->t)
		scols_unref_table(tb->t);
	tb->t = NULL;
}

void table_help(FILE *f, const struct col_def *defs, int ndefs)
{
	for (int i = 0; i < ndefs; i++)
		fprintf(f, "  %-11s %-14s %s\n", defs[i].name, defs[i].json, defs[i].help);
	fputs("Without -o (--json: every column):\n ", f);
	for (int i = 0; i < ndefs; i++)
		if (defs[i].dflt)
			fprintf(f, " %s", defs[i].name);
	fputs("\n", f);
}
