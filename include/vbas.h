/* vbas — virtual block address spaces on one pool.
 *
 * The public C API.  One file or block device (the pool) holds many
 * thin-provisioned volumes.  Metadata is a set of copy-on-write B+trees;
 * a commit (vbas_flush) makes every change since the previous commit
 * durable at once, and a crash at any point shows the last commit.
 *
 * Conventions, for every function below:
 *  - The return value is 0 on success or a negative errno.  Where the
 *    failure has more to say (which name, which block, which offset),
 *    vbas_errmsg() returns a message for the calling thread's last failure.
 *  - Handles are thread-safe: any function may be called on the same pool
 *    or volume from many threads at once.
 *  - Sizes and offsets are bytes.  Volume sizes and discard ranges are
 *    multiples of the pool's block size; reads and writes may be unaligned.
 *  - Every struct ends in SPARE: room for the fields of later versions, so
 *    that a struct keeps its size and every offset as it grows (the ABI;
 *    docs/design.md, "The library's ABI").  A struct the caller passes in
 *    (the format and open options, the pool settings) must have it zero:
 *    initialize the whole struct ({ 0 } or a designated initializer, or
 *    what vbas_pool_get filled) before setting fields; a nonzero SPARE is
 *    refused with -EINVAL and a message.  A struct the library fills comes
 *    back with SPARE zeroed.  A field added later means, when zero, what
 *    the library did before it existed.
 *
 * Errors every function may return besides those listed:
 *  -EINVAL   a bad argument (message says which)
 *  -ENOMEM   out of memory
 *  -EIO      the backing device failed
 *  -EBADMSG  a metadata block failed its checksum (message names the block)
 *  -EUCLEAN  metadata is structurally corrupt (message says where)
 *  -EROFS    the pool was opened read-only, or was latched read-only after a
 *            failed commit
 */
#ifndef VBAS_H
#define VBAS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VBAS_VERSION_STRING "0.1.0"

/* What libvbas.so exports: every function declared here, and nothing
 * else.  The library is built with -fvisibility=hidden, so only what
 * carries VBAS_API is visible; a version script made from this header
 * (build/libvbas.map) fences it a second time. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define VBAS_API __attribute__((visibility("default")))
#else
#define VBAS_API
#endif

struct vbas_pool;
struct vbas_vol;
struct vbas_resv;

/* Limits. */
#define VBAS_NAME_MAX          255               /* bytes in a volume name */
#define VBAS_BLOCK_SIZE_MIN    4096u
#define VBAS_BLOCK_SIZE_MAX    (1u << 20)
#define VBAS_BLOCK_SIZE_DEFAULT 4096u
#define VBAS_VOLUME_SIZE_MAX   (1ull << 60)      /* 1 EiB */
#define VBAS_CACHE_DEFAULT     (64ull << 20)     /* metadata cache, bytes */

/* ---- Pools ------------------------------------------------------------ */

struct vbas_format_opts {
	uint64_t size;          /* pool size; 0 = size of the existing file/device */
	uint32_t block_size;    /* 0 = VBAS_BLOCK_SIZE_DEFAULT; power of two, 4K..1M */
	uint32_t flags;         /* VBAS_FORMAT_* */
	uint32_t spare[12];     /* zero */
};
#define VBAS_FORMAT_FORCE      0x1u   /* overwrite an existing pool */
#define VBAS_FORMAT_NO_RMAP    0x2u   /* keep no reverse map (fsmap then walks
                                         every tree; repair and shrink need
                                         one): for comparison and old tools */

/* Create a pool in PATH (a regular file, created if missing, or a block
 * device).  Refuses (-EEXIST) to overwrite a pool unless VBAS_FORMAT_FORCE.
 * -ENOSPC: the size holds too few blocks for a pool (or is larger than the
 * device); -EFBIG: the file system cannot hold a file of that size.  Every
 * check comes before the first write: on failure PATH is as it was (a file
 * the call created is removed).  Other contents are not looked at: the
 * CLI refuses file systems and other data before calling this. */
VBAS_API int vbas_format(const char *path, const struct vbas_format_opts *opts);

struct vbas_open_opts {
	uint64_t cache_bytes;   /* metadata cache; 0 = VBAS_CACHE_DEFAULT */
	uint32_t flags;         /* VBAS_OPEN_* */
	uint32_t spare[13];     /* zero */
};
#define VBAS_OPEN_RDONLY       0x1u
#define VBAS_OPEN_NO_DIRECT    0x2u   /* buffered I/O even where O_DIRECT works */
/* With VBAS_OPEN_RDONLY only: open without the pool's lock, to read a pool
 * that another process (a server) has open for writing.  Only consistent
 * while that process holds a pin taken with vbas_pool_pin (vbas check of
 * a served pool asks the server for one through its control channel), and
 * the opener must check that the generation it opened (vbas_pool_info) is
 * at least the pinned one.  Not for other uses. */
#define VBAS_OPEN_PINNED       0x4u
/* Open a damaged pool for vbas_repair: a refcount tree or reverse map that
 * cannot be read does not stop the open, no interrupted delete is resumed,
 * and nothing but vbas_repair may change the pool (reads and vbas_check
 * work) until it has repaired it. */
#define VBAS_OPEN_REPAIR       0x8u
/* Do not go on with a shrink that did not finish (vbas_pool_shrink) at
 * open: to cancel it, or to look before the moves go on. */
#define VBAS_OPEN_NO_RESUME    0x10u

/* Open a pool.  -ENOENT: no such file; -EINVAL/-EUCLEAN: not a vbas pool
 * (bad magic) or no valid superblock; -EBUSY: another opener holds the pool
 * (it is locked for as long as it is open). */
VBAS_API int vbas_open(const char *path, const struct vbas_open_opts *opts,
		       struct vbas_pool **poolp);

/* Commit and close.  Open volume handles must have been closed (-EBUSY). */
VBAS_API int vbas_close(struct vbas_pool *pool);

/* Pin the pool's metadata as of its last commit, whose generation goes to
 * *GENERATION: until the matching vbas_pool_unpin, no block freed from now
 * on is reused (they are kept aside in memory), so every block that any
 * commit from this one on uses stays as it is on the device.  Another
 * process may then read the pool file (VBAS_OPEN_PINNED) at its newest
 * commit and see it whole.  Pins nest; the blocks come back when the last
 * one goes.  While pinned, the pool may run out of space sooner. */
VBAS_API int vbas_pool_pin(struct vbas_pool *pool, uint64_t *generation);
VBAS_API void vbas_pool_unpin(struct vbas_pool *pool);

/* Commit: every change made before the call is durable when it returns.
 * The device flushes run without the pool's lock: reads, writes and other
 * calls of other threads go on meanwhile, and flushes that arrive while a
 * commit is on its way wait for it and share the next one.  With nothing
 * written since the last flush it costs nothing. */
VBAS_API int vbas_flush(struct vbas_pool *pool);

struct vbas_pool_info {
	uint64_t size;            /* bytes the pool covers */
	uint32_t block_size;
	uint64_t total_blocks;    /* blocks usable for data and metadata */
	uint64_t data_used;       /* bytes of data blocks in use */
	uint64_t metadata_used;   /* bytes of metadata blocks in use (incl. superblocks) */
	uint64_t free;            /* bytes free (incl. the metadata reserve) */
	uint64_t reserved;        /* bytes of reservations held */
	uint64_t metadata_reserve;/* bytes held back so that freeing never fails */
	uint64_t volumes;
	uint64_t mapped;          /* bytes mapped, summed over every volume */
	uint64_t sharing_saves;   /* mapped - data_used: what sharing saves */
	uint64_t generation;      /* id of the last commit */
	uint32_t cache_blocks;    /* size of the metadata cache, in blocks */
	uint64_t reserved_metadata; /* of RESERVED: the metadata allowances
	                             reservations hold for their writes */
	/* Since the pool was opened, summed over every reservation: bytes of
	 * metadata allowance granted (at reservation time and by the top-ups
	 * of commits), and bytes of metadata their writes allocated.  Their
	 * difference is what the bounds over-reserve (docs/design.md,
	 * "Reservations"). */
	uint64_t reserved_metadata_granted;
	uint64_t reserved_metadata_used;
	/* Reserved ranges (vbas_vol_reserve): their blocks are in use (in
	 * DATA_USED); of RESERVED, the blocks held for copies on write of
	 * the shared ones. */
	uint64_t reserved_ranges;
	uint64_t reserved_owed;
	/* Free for new data: FREE less the metadata reserve and RESERVED. */
	uint64_t available;
	/* The settings (vbas_pool_set), permille. */
	uint32_t low_water, expendable_floor;
	uint32_t rmap;            /* 1: the pool keeps a reverse map */
	uint64_t shrink_to;       /* a shrink in progress: its target in bytes
	                             (0: none) */
	uint32_t intents;         /* reflinks, dedupes and unshares under way
	                             (finished at the next read-write open if a
	                             crash cuts them short) */
	uint64_t dirty_blocks;    /* metadata blocks changed since the last
	                             commit and not yet written (the cache
	                             writes some early when it is full): what
	                             the next commit writes */
	uint32_t spare[16];
};
VBAS_API int vbas_pool_info(struct vbas_pool *pool, struct vbas_pool_info *info);

/* ---- Space settings, growth and events ------------------------------- */

/* Stored in the pool (committed by vbas_pool_set), in permille of the
 * pool's blocks (info's total_blocks). */
struct vbas_pool_settings {
	uint32_t low_water;        /* use (what is not available for new data)
	                              at which VBAS_EVENT_LOW_WATER fires, and a
	                              server grows the pool if told to; 0 = none */
	uint32_t expendable_floor; /* room kept free by deleting expendable
	                              snapshots, oldest first (VBAS_SNAP_EXPENDABLE);
	                              0 = delete them only when a write or a
	                              reservation would fail for lack of room */
	uint32_t spare[14];        /* zero (vbas_pool_get fills it so) */
};
VBAS_API int vbas_pool_get(struct vbas_pool *pool, struct vbas_pool_settings *settings);
/* -EINVAL: a figure above 1000. */
VBAS_API int vbas_pool_set(struct vbas_pool *pool, const struct vbas_pool_settings *settings);

/* Grow the pool to SIZE bytes (rounded down to whole blocks) and commit:
 * a regular file is extended (sparse); a block device must have grown
 * first (lvextend).  Online: volumes stay open, writes go on.  -EINVAL:
 * smaller than the pool; -ENOSPC: the device holds less than SIZE;
 * -EFBIG: the file system cannot hold a file that large. */
VBAS_API int vbas_pool_grow(struct vbas_pool *pool, uint64_t size);

/* Shrink the pool to SIZE bytes (rounded down to whole blocks): every
 * block in use past the new end, data and metadata, is moved below it,
 * the reverse map naming every owner, and a pool file is truncated.
 * Online: volumes stay open and writes go on; the pool lock is taken one
 * step at a time (one commit each), and a step waits for I/O in flight
 * on the ranges it moves.  Shared blocks and nodes stay shared.  The
 * target is recorded in the pool first: from then on nothing is
 * allocated past it, and a crash or an error leaves it in place; the next
 * read-write open goes on with the move, and vbas_pool_shrink_cancel
 * gives the room back.  -EOPNOTSUPP: the pool keeps no reverse map
 * (vbas_pool_rmap_build); -EINVAL: not smaller, or below the smallest
 * pool; -ENOSPC: what is in use, promised to reservations and held for
 * metadata would not fit (nothing changed), or the room below the target
 * ran out or is in runs too short for an extent (the target stays);
 * -EBUSY: a delete stopped for lack of room is still in progress, or a
 * pin keeps blocks past the target. */
struct vbas_shrink_stats {
	uint64_t data_blocks;       /* data blocks moved */
	uint64_t nodes;             /* metadata nodes written for the moves */
	uint64_t steps;             /* commits */
	uint32_t spare[10];
};
VBAS_API int vbas_pool_shrink(struct vbas_pool *pool, uint64_t size,
			      struct vbas_shrink_stats *stats);
/* Stop a shrink that did not finish: the blocks past its target may be
 * allocated again (what was moved stays where it went). */
VBAS_API int vbas_pool_shrink_cancel(struct vbas_pool *pool);
/* Make a vbas_pool_shrink running in another thread return -ECANCELED
 * after its current step, its target kept (a server that stops: the next
 * open goes on with it).  0 whether or not one runs. */
VBAS_API int vbas_pool_shrink_stop(struct vbas_pool *pool);

/* Build the reverse map of a pool that has none (formatted with
 * VBAS_FORMAT_NO_RMAP, or by a version before format 5): one walk of every
 * mapping tree and one commit, after which the pool is format 5.  -EEXIST:
 * it has one; -ENOSPC: no room for it. */
VBAS_API int vbas_pool_rmap_build(struct vbas_pool *pool);

enum vbas_event_type {
	VBAS_EVENT_LOW_WATER = 1,   /* use rose to the low-water mark */
	VBAS_EVENT_LOW_WATER_CLEAR, /* use fell 1% below it (or the pool grew) */
	VBAS_EVENT_META_LOW,        /* the room available for new data fell to the
	                               size of the metadata reserve: the pool is
	                               all but full */
	VBAS_EVENT_META_LOW_CLEAR,  /* and rose 1% of the pool above it */
	VBAS_EVENT_ENOSPC,          /* a write or reservation was refused for lack
	                               of room (once until room comes back: COUNT
	                               says how many refusals it stands for) */
	VBAS_EVENT_EXPENDED,        /* expendable snapshot NAME was deleted to
	                               make room */
	VBAS_EVENT_GROWN,           /* the pool grew (vbas_pool_grow) */
};
/* Use, for events, is what is not available: blocks in use, the
 * metadata reserve, and the copies set aside for shared reserved ranges;
 * not what writes in flight and cookies hold for a moment, which would
 * make use jump past a mark and back at every write. */
struct vbas_event {
	enum vbas_event_type type;
	uint32_t use;               /* permille of the pool in use, at the event */
	uint32_t low_water;         /* the mark (permille), 0 = none */
	uint64_t size;              /* bytes the pool covers */
	uint64_t available;         /* bytes available for new data, as above */
	uint64_t needed;            /* ENOSPC: bytes the refused change needed */
	uint64_t count;             /* ENOSPC: refusals since the last event */
	char name[VBAS_NAME_MAX + 1];   /* EXPENDED: the snapshot */
	uint32_t spare[20];
};
/* Call FN (NULL: none) for every event from now on.  Each threshold fires
 * once per crossing, up and down; registering while above the low-water
 * mark fires LOW_WATER at once.  FN runs with the pool's lock held, in the
 * thread whose change caused the event: it must not call into the library;
 * copy the event and return (hand it to a thread of your own). */
VBAS_API void vbas_pool_on_event(struct vbas_pool *pool,
				 void (*fn)(const struct vbas_event *ev, void *arg), void *arg);

/* Message for the calling thread's last failed vbas call ("" if none). */
VBAS_API const char *vbas_errmsg(void);

/* ---- Volumes ---------------------------------------------------------- */

struct vbas_vol_info {
	char name[VBAS_NAME_MAX + 1];
	uint64_t id;
	uint64_t size;      /* bytes */
	uint64_t mapped;    /* bytes mapped to pool blocks */
	uint64_t origin;    /* id of the volume this is a snapshot or clone of
	                       (0: none; the origin may have been deleted) */
	uint32_t flags;     /* VBAS_VOL_* */
	uint64_t reserved;  /* bytes of its reserved ranges (vbas_vol_reserve) */
	uint64_t owed;      /* bytes the pool holds for copies on write of
	                       reserved blocks that are shared */
	uint32_t spare[18];
};
#define VBAS_VOL_READONLY      0x1u   /* a snapshot */
#define VBAS_VOL_EXPENDABLE    0x2u   /* deleted by the pool to make room */

/* Names are 1..255 bytes, no '/' and no NUL, not "." or "..".  A new name
 * (create, snapshot, clone) must also be valid UTF-8 without control
 * characters (C0, DEL, C1): what NBD export names and JSON carry; -EINVAL
 * otherwise.  A name an older vbas let through still opens and deletes,
 * and vbas_check reports it.  Sizes are multiples of the
 * block size, 1 block .. VBAS_VOLUME_SIZE_MAX, and may exceed the pool.
 * create: -EEXIST name taken.  delete/resize/stat/open: -ENOENT unknown.
 * delete: -EBUSY open.  Shrinking frees the blocks past the new end. */
VBAS_API int vbas_vol_create(struct vbas_pool *pool, const char *name, uint64_t size);
VBAS_API int vbas_vol_delete(struct vbas_pool *pool, const char *name);
VBAS_API int vbas_vol_resize(struct vbas_pool *pool, const char *name, uint64_t size);
/* NAME is called NEWNAME from now on (a new name's rules; -EEXIST taken).
 * Open handles keep working: they hold the volume, not its name. */
VBAS_API int vbas_vol_rename(struct vbas_pool *pool, const char *name, const char *newname);
/* Make writable volume NAME equal to SNAP, a snapshot of it: O(1), NAME
 * shares SNAP's mapping tree (and takes its size) from now on, and the
 * tree it had is released as a delete releases it (in steps; a crash
 * resumes them at open).  NAME keeps its id, its name and its snapshots.
 * -EINVAL: SNAP is not a snapshot of NAME; -EROFS: NAME is a snapshot;
 * -EBUSY: NAME is open; -ENOTSUP: either has reserved ranges (unreserve
 * first). */
VBAS_API int vbas_vol_rollback(struct vbas_pool *pool, const char *name, const char *snap);
/* Protect volume NAME from writes (READONLY 1: it becomes read-only, as a
 * snapshot is) or let it be written again (0: a snapshot becomes a
 * writable volume, no longer expendable).  -EBUSY: made read-only while
 * open; -ENOTSUP: it has reserved ranges.  Nothing to do is 0. */
VBAS_API int vbas_vol_set_readonly(struct vbas_pool *pool, const char *name, int readonly);
VBAS_API int vbas_vol_stat(struct vbas_pool *pool, const char *name,
			   struct vbas_vol_info *info);
/* Calls CB for every volume in id order; a non-zero return from CB stops
 * the walk and is returned. */
VBAS_API int vbas_vol_list(struct vbas_pool *pool,
			   int (*cb)(const struct vbas_vol_info *info, void *arg),
			   void *arg);

VBAS_API int vbas_vol_open(struct vbas_pool *pool, const char *name,
			   struct vbas_vol **volp);
VBAS_API int vbas_vol_close(struct vbas_vol *vol);
VBAS_API int vbas_vol_info(struct vbas_vol *vol, struct vbas_vol_info *info);

/* ---- Sharing ---------------------------------------------------------- */

/* Make NAME a snapshot (read-only) or, with VBAS_SNAP_WRITABLE, a clone of
 * volume SRC (a live volume or a snapshot; chains of any depth).  O(1):
 * the new volume shares SRC's mapping tree, whatever its size.  Commits
 * first if SRC changed in the running transaction.  -EEXIST: NAME taken;
 * -ENOENT: no SRC. */
#define VBAS_SNAP_WRITABLE     0x1u
/* Reserved ranges of SRC become shared: by default the pool sets aside a
 * block for every reserved block of SRC (if writable) and of a clone, so
 * that their writes still cannot fail, or the call fails with -ENOSPC
 * having changed nothing.  NORESERVE shares them without: a write there
 * may then fail with -ENOSPC until it has copied the block once. */
#define VBAS_SNAP_NORESERVE    0x2u
/* A snapshot the pool may delete, oldest first, when a write or a
 * reservation would otherwise fail for lack of room, or free room would
 * fall below the pool's expendable_floor (vbas_pool_set); never one that
 * is open.  Not with VBAS_SNAP_WRITABLE (-EINVAL). */
#define VBAS_SNAP_EXPENDABLE   0x4u
VBAS_API int vbas_vol_snapshot(struct vbas_pool *pool, const char *src, const char *name,
			       unsigned flags);

/* Exact block usage of one volume: MAPPED = EXCLUSIVE + SHARED.  EXCLUSIVE
 * blocks have no other reference (deleting the volume frees them); SHARED
 * blocks are also referenced by another volume or at another offset.
 * Walks the volume's mapping tree: O(extents), letting other threads in
 * every few thousand extents; exact for a volume that is not written
 * during the call, else as of the parts walked. */
struct vbas_vol_usage {
	uint64_t mapped, exclusive, shared;   /* bytes */
	uint32_t spare[10];
};
VBAS_API int vbas_vol_usage(struct vbas_pool *pool, const char *name,
			    struct vbas_vol_usage *usage);

/* Share [SRC_OFF, SRC_OFF+LEN) of SRC into DST at DST_OFF (FICLONERANGE):
 * afterwards DST's range reads as SRC's did, and the two share blocks
 * until either is written.  Offsets and LEN block-aligned, except that
 * the range may run to the end of SRC; LEN 0 means to the end of SRC.
 * DST's old blocks in the range lose a reference.  -EINVAL: misaligned,
 * or overlapping ranges within one volume; -ERANGE: past the end of SRC
 * or DST; -EROFS: DST is a snapshot.  -ENOSPC: no room for the metadata;
 * like FICLONERANGE, the range may then be shared part way: a prefix, up
 * to a block boundary the message names ("N of M blocks were shared"),
 * with the rest of DST untouched. */
VBAS_API int vbas_reflink(struct vbas_vol *src, uint64_t src_off, struct vbas_vol *dst,
			  uint64_t dst_off, uint64_t len);

/* Share the range as vbas_reflink does, but only if the bytes are the same
 * (FIDEDUPERANGE): *SAME is 1 and the range is shared, or 0 and nothing
 * changed.  Compares through a bounded buffer, with both ranges locked. */
VBAS_API int vbas_dedupe(struct vbas_vol *src, uint64_t src_off, struct vbas_vol *dst,
			 uint64_t dst_off, uint64_t len, int *same);

/* Give every shared block of [OFF, OFF+LEN) (block-aligned; LEN 0: to the
 * end) a private copy.  All or nothing in space: -ENOSPC before anything
 * changes if the copies do not fit. */
VBAS_API int vbas_unshare(struct vbas_vol *vol, uint64_t off, uint64_t len);

/* Calls CB for each maximal range, in logical order, where TO reads
 * differently from FROM because its mapping differs (another block, or a
 * hole against a block).  Skips the subtrees the two volumes share, so
 * the work grows with the changes between them, not with their size:
 * meant for volumes of one lineage (a snapshot and its origin). */
VBAS_API int vbas_diff(struct vbas_vol *from, struct vbas_vol *to,
		       int (*cb)(uint64_t off, uint64_t len, void *arg), void *arg);

/* ---- Reservations ----------------------------------------------------- */

/* Claim NBLOCKS free pool blocks for later writes, with the metadata
 * those writes may need, or fail with -ENOSPC having claimed nothing.
 * Writes that pass the reservation to vbas_map_begin draw their blocks
 * and their metadata room from it and do not fail with -ENOSPC while
 * blocks are left in it: the metadata allowance covers one write's tree
 * changes plus the nodes NBLOCKS new extents may add, for any volume of
 * the pool, and every commit tops it up from the blocks it freed.  A
 * reservation is not tied to a range or a volume.  Reference counted:
 * vbas_resv_put() of the last reference returns what was not used.
 * (docs/design.md, "Reservations", says what is over-reserved, and why.) */
VBAS_API int vbas_reserve(struct vbas_pool *pool, uint64_t nblocks,
			  struct vbas_resv **resvp);
/* Reserve what a write of [OFF, OFF+LEN) of VOL needs now: a block for
 * every hole and every shared block (copy on write), the nodes its
 * extents may add, and copies of the shared tree nodes on its paths;
 * nothing if the range is all mapped and unshared.  Sized for that range,
 * as it is at the call; usable for any write, like vbas_reserve's.
 * -EROFS: a snapshot; -ERANGE: past the end; -EINVAL: LEN 0. */
VBAS_API int vbas_reserve_range(struct vbas_vol *vol, uint64_t off, uint64_t len,
				struct vbas_resv **resvp);
/* Persistent reservation, fallocate mode 0: every later write inside
 * [OFF, OFF+LEN) of VOL succeeds, whatever else happens in the pool, until
 * vbas_vol_unreserve.  Holes get blocks of their own, zeroed on the
 * device; the range's extents are marked reserved in the volume's tree,
 * so it survives close, crash and reopen, and a snapshot, clone or
 * reflink that shares its blocks sets their copies aside (see
 * VBAS_SNAP_NORESERVE).  Whole blocks: the range is rounded out.  A
 * discard inside it zeroes the blocks and keeps them.  -ENOSPC (nothing
 * changed): not enough room; -EROFS: a snapshot; -ERANGE: past the end;
 * -EINVAL: LEN 0.  Reserving a range reserved already is a no-op. */
VBAS_API int vbas_vol_reserve(struct vbas_vol *vol, uint64_t off, uint64_t len);
/* End the reservation of [OFF, OFF+LEN) (block aligned, else -EINVAL):
 * the blocks stay mapped with their data; a discard frees them. */
VBAS_API int vbas_vol_unreserve(struct vbas_vol *vol, uint64_t off, uint64_t len);
/* Reservations are reference counted.  vbas_resv_get adds a reference to
 * RESV (not NULL) for another holder, such as another thread that writes
 * with it; vbas_resv_put drops one (NULL: nothing to do), and the last put
 * gives back to the pool what was not used, data blocks and metadata
 * allowance.  A mapping made with a reservation holds a reference of its
 * own from vbas_map_begin to vbas_map_end, so the caller may put its own
 * while mappings are in flight.  Every reference must be put before
 * vbas_close of the pool (a reservation lives in the open pool's memory:
 * a put after the close would touch freed memory). */
VBAS_API void vbas_resv_get(struct vbas_resv *resv);
VBAS_API void vbas_resv_put(struct vbas_resv *resv);
/* The data blocks left in RESV. */
VBAS_API uint64_t vbas_resv_remaining(const struct vbas_resv *resv);

/* What a reservation holds and what its writes took, in blocks: the
 * over-reservation is META_GRANTED against META_USED (which counts the
 * shadow copies each commit frees again, and the refcount tree's churn a
 * step pays for).  META_SHORT counts metadata blocks its writes took out
 * of room other reservations held: 0 unless a bound was wrong. */
struct vbas_resv_stats {
	uint64_t data_left, data_used;
	uint64_t meta_held;     /* allowance held now */
	uint64_t meta_granted;  /* held in all: at the start and by top-ups */
	uint64_t meta_used;     /* metadata blocks the writes allocated */
	uint64_t meta_short;
	uint32_t spare[20];
};
VBAS_API int vbas_resv_stats(const struct vbas_resv *resv, struct vbas_resv_stats *st);

/* ---- The mapping interface -------------------------------------------- */

enum vbas_iomap_type {
	VBAS_IOMAP_HOLE = 1,    /* nothing mapped: reads as zeros */
	VBAS_IOMAP_MAPPED,      /* mapped; for a write, overwrite in place */
	VBAS_IOMAP_NEW,         /* freshly allocated for a write: invisible to
	                         * readers until vbas_map_end() */
};

#define VBAS_MAP_READ   0x1u
#define VBAS_MAP_WRITE  0x2u

struct vbas_iomap {
	enum vbas_iomap_type type;
	uint32_t flags;         /* VBAS_IOMAP_F_* */
	uint64_t offset;        /* logical byte offset of the mapping */
	uint64_t length;        /* bytes, from offset */
	uint64_t physical;      /* byte address in the device (not for HOLE) */
	int fd;                 /* the pool's device, for the client's own I/O */
	uint64_t cow_physical;  /* F_SHARED write: old data of the same range */
	/* The library's state of the mapping, from vbas_map_begin to
	 * vbas_map_end: opaque, not to be read or changed. */
	uint64_t priv[8];
	uint32_t spare[12];
};
#define VBAS_IOMAP_F_DIRECT 0x1u /* fd is O_DIRECT: align buffers and I/O */
#define VBAS_IOMAP_F_SHARED 0x2u /* write (NEW): copy-on-write of shared
                                  * blocks, whose old contents are at
                                  * cow_physical: the client fills the parts
                                  * of the first and last block it does not
                                  * write from there */

/* Map [off, off+len) for a read or a write.  The result covers a prefix of
 * the range (map->length may be less than len); call again for the rest.
 * The covered blocks stay locked against other writers until
 * vbas_map_end().  For a write, a hole gets new blocks (VBAS_IOMAP_NEW)
 * whose partial first and last blocks the client must fill completely
 * (zeros where it writes nothing); so do shared blocks (copy-on-write,
 * VBAS_IOMAP_F_SHARED: fill from cow_physical), whose old contents stay
 * visible to readers and to every other volume until vbas_map_end().  RESV may be NULL: the write then fails
 * with -ENOSPC when no block is free.  -EROFS: read-only volume. */
VBAS_API int vbas_map_begin(struct vbas_vol *vol, uint64_t off, uint64_t len,
			    unsigned flags, struct vbas_resv *resv,
			    struct vbas_iomap *map);

/* Finish a mapping: ERROR 0 makes a NEW mapping visible (DONE bytes from
 * map->offset were written; the blocks they touch are mapped, the rest are
 * returned); ERROR non-zero abandons it.  Always releases the lock. */
VBAS_API int vbas_map_end(struct vbas_vol *vol, struct vbas_iomap *map,
			  uint64_t done, int error);

/* ---- Convenience I/O built on the mapping interface ------------------- */

#define VBAS_IO_FUA      0x1u    /* pwrite/zeroes: commit before returning */
#define VBAS_IO_NO_PUNCH 0x2u    /* write_zeroes: allocate, do not discard: the
                                    range becomes reserved (vbas_vol_reserve) */

/* All-or-nothing in space: pwrite reserves every block it needs first and
 * fails with -ENOSPC having changed nothing.  -ERANGE: past the end. */
VBAS_API int vbas_pread(struct vbas_vol *vol, void *buf, size_t len, uint64_t off);
VBAS_API int vbas_pwrite(struct vbas_vol *vol, const void *buf, size_t len,
			 uint64_t off, unsigned flags);
/* Unmap [off, off+len): block-aligned; the blocks return to the pool. */
VBAS_API int vbas_discard(struct vbas_vol *vol, uint64_t off, uint64_t len,
			  unsigned flags);
/* Make [off, off+len) read as zeros; any alignment. */
VBAS_API int vbas_write_zeroes(struct vbas_vol *vol, uint64_t off, uint64_t len,
			       unsigned flags);

struct vbas_extent {
	uint64_t offset;    /* logical, bytes */
	uint64_t length;    /* bytes */
	uint64_t physical;  /* byte address in the device */
	uint32_t flags;     /* VBAS_EXTENT_* */
	uint32_t spare[9];
};
#define VBAS_EXTENT_SHARED 0x1u
#define VBAS_EXTENT_RESERVED 0x2u   /* in a reserved range (vbas_vol_reserve) */

/* Calls CB for each mapped extent overlapping [off, off+len), clipped to
 * it, in logical order.  A non-zero return from CB stops and is returned. */
VBAS_API int vbas_extents(struct vbas_vol *vol, uint64_t off, uint64_t len,
			  int (*cb)(const struct vbas_extent *ext, void *arg), void *arg);

/* ---- Who uses a block: fsmap ----------------------------------------- */

enum vbas_fsmap_kind {
	VBAS_FSMAP_FREE = 1,       /* no owner */
	VBAS_FSMAP_SUPERBLOCK,     /* blocks 0 and 1 */
	VBAS_FSMAP_VOLTAB,         /* a node of the volume table (or its name index) */
	VBAS_FSMAP_REFCOUNT,       /* a node of the refcount tree */
	VBAS_FSMAP_MAPPING,        /* a node of VOLUME's mapping tree */
	VBAS_FSMAP_DATA,           /* data VOLUME reads at LOGICAL */
	VBAS_FSMAP_RMAP,           /* a node of the reverse map */
};
struct vbas_fsmap_rec {
	uint64_t physical;         /* byte address in the pool */
	uint64_t length;           /* bytes */
	enum vbas_fsmap_kind kind;
	uint32_t level;            /* tree nodes: 0 = leaf */
	uint64_t volume;           /* MAPPING, DATA: the volume's id */
	uint64_t logical;          /* DATA: byte offset in the volume */
	char name[VBAS_NAME_MAX + 1];   /* MAPPING, DATA: the volume's name */
	uint32_t spare[22];
};
/* Calls CB for every owner of every block in [OFF, OFF+LEN) (block
 * aligned; LEN 0: to the end of the pool), in physical order, clipped to
 * the range: a block shared by snapshots, clones or reflinks once per
 * volume (and per offset) that reads it, a node shared by several trees
 * once per tree; runs of blocks with one owner, contiguous physically and
 * (data) logically, come as one record.  Free runs are FREE records.  A
 * non-zero return from CB stops and is returned.  -EINVAL: misaligned;
 * -ERANGE: past the end of the pool.  With the pool's reverse map it
 * reads what the range holds (an interval query; a lookup in each volume
 * that may see a data record; each node's header): O(log n + results);
 * without one it walks every tree.  Holds the pool's lock while it
 * gathers the answer, and calls CB after letting it go; the answer is
 * held in memory (40 bytes a record) to be put in physical order. */
VBAS_API int vbas_fsmap(struct vbas_pool *pool, uint64_t off, uint64_t len,
			int (*cb)(const struct vbas_fsmap_rec *rec, void *arg), void *arg);

/* ---- Checking --------------------------------------------------------- */

/* Verify every invariant: checksums, tree order and keys, reference counts
 * of every block against every reference, accounting totals, mappings
 * within volume sizes.  Each problem is passed to CB (may be NULL) as a
 * message that names where.  Returns 0 if clean, -EUCLEAN if any problem
 * was found, or another negative errno if the check could not run. */
struct vbas_check_stats {
	uint64_t problems;
	uint64_t nodes;         /* tree nodes visited */
	uint64_t extents;       /* mapping records visited */
	uint64_t refcount_records;
	uint64_t volumes;
	uint64_t rmap_records;  /* reverse-map records (0: the pool keeps none) */
	uint32_t spare[20];
};
VBAS_API int vbas_check(struct vbas_pool *pool,
			void (*cb)(const char *problem, void *arg), void *arg,
			struct vbas_check_stats *stats);

/* ---- Progress ----------------------------------------------------------- */

/* CB hears how far the long calls on POOL have come: vbas_vol_delete and
 * vbas_vol_rollback (bytes of the volume released: DONE of TOTAL, its
 * size), vbas_unshare and vbas_reflink (bytes of the range) and vbas_check
 * (tree nodes walked, of the metadata blocks in use).  It is called from
 * the calling thread between steps, with the pool's lock held: it must not
 * call the library.  A nonzero return stops the call at that step, which
 * returns -EINTR having kept what it did: a delete's volume is gone from
 * the list and the rest of its blocks are freed by the next delete or
 * open; an unshare's range is unshared up to there; a check says nothing
 * of the pool.  A reflink does not stop: it is finished whole.  CB NULL:
 * none. */
VBAS_API void vbas_pool_progress(struct vbas_pool *pool,
				 int (*cb)(void *arg, uint64_t done, uint64_t total), void *arg);

/* ---- Repair ------------------------------------------------------------ */

/* Rebuild what the surviving structures determine: a mapping-tree leaf
 * that cannot be read from the reverse map (its records are those the
 * reverse map holds and no readable leaf accounts for; rewritten in place
 * as its parents expect it; the reserved-range flag of its extents is not
 * in the reverse map and comes back clear), a damaged or lost refcount
 * tree from the mapping trees (every node and every mapped block
 * recounted), a damaged or lost reverse map from the mapping leaves.  The
 * result is written as one new commit; until it lands the last commit
 * stays the one a crash comes back to.  Damage it cannot undo (the volume
 * table, an interior node, two unreadable leaves over the same keys) is
 * named (each problem to CB) and not repaired: -EUCLEAN, nothing changed.  VBAS_REPAIR_DRY_RUN: say what would be rebuilt,
 * change nothing.  0 when the pool is sound afterwards (or was). */
#define VBAS_REPAIR_DRY_RUN    0x1u
struct vbas_repair_stats {
	uint32_t refcount_rebuilt;  /* 1: the refcount tree was (or would be) rebuilt */
	uint32_t rmap_rebuilt;      /* 1: the reverse map was (or would be) */
	uint64_t refcount_records;  /* records of the new tree */
	uint64_t rmap_records;
	uint64_t unrepairable;      /* problems in the volume table or a mapping tree */
	uint32_t leaves_rebuilt;    /* unreadable mapping leaves rebuilt from the
	                               reverse map (or that would be) */
	uint32_t interior_rebuilt;  /* unreadable mapping interior nodes rebuilt
	                               from the nodes below that lost their parent */
	uint32_t names_rebuilt;     /* 1: the name index was (or would be) rebuilt
	                               from the volume table */
	uint32_t spare[21];
};
VBAS_API int vbas_repair(struct vbas_pool *pool, unsigned flags,
			 void (*cb)(const char *msg, void *arg), void *arg,
			 struct vbas_repair_stats *stats);

/* The library's version, VBAS_VERSION_STRING as it was built: a program
 * can tell the header it was compiled with from the library it runs. */
VBAS_API const char *vbas_version(void);

#ifdef __cplusplus
}
#endif
#endif /* VBAS_H */
