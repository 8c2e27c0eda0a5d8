/* The CLI's tables (list, map, diff, fsmap), through libsmartcols, the
 * table library of util-linux (lsblk, findmnt): column selection (-o),
 * --noheadings, --raw, --bytes, and --json from the same table, an object
 * {"vbas_format": N, "<rows>": [...]} with one key per column.
 */
#ifndef VBAS_TOOLS_TABLE_H
#define VBAS_TOOLS_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The version of the JSON the tables print: raised when a key changes
 * meaning or goes (new keys may come without it). */
#define VBAS_JSON_FORMAT 1

enum col_type {
	COL_STR,        /* text; NULL is JSON null, "-" in text */
	COL_NUM,        /* a count or an id */
	COL_OFFSET,     /* a byte position: bytes, always */
	COL_SIZE,       /* a byte count: human (10.0 GiB) unless --bytes; JSON bytes */
	COL_PCT,        /* a percentage: "12.5%"; JSON a number */
	COL_BOOL,       /* text as the column says; JSON true/false */
};

struct col_def {
	const char *name;       /* header, and the name -o takes */
	const char *json;       /* its JSON key (-o takes it too) */
	enum col_type type;
	int dflt;               /* shown without -o (text; JSON shows every column) */
	const char *yes, *no;   /* COL_BOOL's text */
	const char *help;       /* for --help */
	int width;              /* in a streamed table, padded to it (0: as
	                           the type's widest value; a COL_STR: not) */
};

#define TABLE_JSON        0x1u
#define TABLE_BYTES       0x2u
#define TABLE_RAW         0x4u
#define TABLE_NOHEADINGS  0x8u
/* Rows are printed as they come, TABLE_CHUNK at a time (map, diff and
 * fsmap of millions of extents in bounded memory): the text columns have
 * fixed widths, so that every chunk lines up with the first. */
#define TABLE_STREAM      0x10u
#define TABLE_CHUNK       4096
#define TABLE_MAX_COLS    24

struct table {
	struct libscols_table *t;
	const struct col_def *defs;
	int ndefs;
	int col[TABLE_MAX_COLS];   /* column of def I, or -1 if not shown */
	int ncols;                 /* shown */
	unsigned flags;
	const char *rows;          /* the JSON key of the rows */
	size_t lines;              /* in the table now (TABLE_STREAM) */
	size_t chunks;             /* printed so far (TABLE_STREAM) */
	FILE *out;                 /* where they go: stdout */
	int any;                   /* a row was printed (JSON) */
	int failed;
};

struct libscols_line;

/* A table of NDEFS columns DEFS, rows named ROWS in JSON; OUTPUT is -o's
 * value (NULL: the defaults): "A,B" those columns, "+A,B" the defaults and
 * those.  -1 with WHY if OUTPUT names an unknown column or too many. */
int table_open(struct table *tb, const char *rows, const struct col_def *defs, int ndefs,
	       const char *output, unsigned flags, char *why, size_t wlen);
struct libscols_line *table_line(struct table *tb);
/* The cell of column DEF (an index into DEFS) of line LN; nothing if the
 * column is not shown.  -1 if out of memory. */
int table_str(struct table *tb, struct libscols_line *ln, int def, const char *s);
int table_u64(struct table *tb, struct libscols_line *ln, int def, uint64_t v);
int table_bool(struct table *tb, struct libscols_line *ln, int def, int v);
int table_pct(struct table *tb, struct libscols_line *ln, int def, uint64_t part,
	      uint64_t whole);
/* No value: "-" in text, null in JSON. */
int table_none(struct table *tb, struct libscols_line *ln, int def);
/* A streamed table: after each row, prints a full chunk.  -1 on failure. */
int table_row_done(struct table *tb);
/* Print it to F (JSON with its "vbas_format" key); -1 on failure. */
int table_print(struct table *tb, FILE *f);
void table_free(struct table *tb);
/* The columns, for --help: "NAME  the volume's name" lines into F. */
void table_help(FILE *f, const struct col_def *defs, int ndefs);

/* V bytes as "10.0 GiB" (powers of 1024), or "123 B". */
const char *human(uint64_t v, char *buf, size_t len);

#endif
