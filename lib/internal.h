/* In-core state of an open pool, shared by the library's layers. */
#ifndef VBAS_INTERNAL_H
#define VBAS_INTERNAL_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>

#include "vbas.h"
#include "btree.h"
#include "cache.h"
#include "crc32c.h"
#include "device.h"
#include "errmsg.h"
#include "extset.h"
#include "format.h"

/* A change to reference counts, queued while trees are being changed and
 * applied to the refcount tree by space_drain(). */
struct refc_delta {
	uint64_t start, len;
	int32_t delta;
	uint8_t type;              /* enum vbas_block_type */
	uint8_t is_alloc;          /* blocks come out of pending_alloc */
};

/* A reverse-map record (or a queued change to one: COUNT is then the
 * delta). */
struct rmap_irec {
	uint64_t pblk, owner, lblk;
	uint32_t len;
	int64_t count;
};
struct rmap_set {
	struct rmap_irec *v;
	size_t n, cap;
};

struct vbas_space {
	struct vbas_btree refc;    /* the refcount tree */
	struct vbas_btree rmap;    /* the reverse map (rmap.c), if RMAP_ON */
	int rmap_on;               /* the pool keeps one (VBAS_SBF_RMAP) */
	struct rmap_set rq;        /* its queued changes */
	uint64_t rmap_nodes;       /* its nodes as last committed */
	uint64_t data_used;        /* blocks of each type in the refcount tree */
	uint64_t meta_used;
	struct extset pending;     /* allocated, not yet in the refcount tree */
	struct extset freed;       /* reached 0 in this transaction: not
	                              reusable before the commit is durable */
	struct extset freed_data;  /* data blocks of FREED, to discard later */
	struct extset touched;     /* counts changed in this transaction (not
	                              by allocation): the last commit may map
	                              these blocks elsewhere, so they are never
	                              overwritten in place before the commit */
	/* The same three sets of a transaction sealed and being committed
	 * while the next one runs (txn.c, "Commits in flight"): its blocks
	 * stay out of use until its superblock is durable, as FREED's do. */
	struct extset freed_prev, freed_data_prev, touched_prev;
	uint64_t freed_above_prev;
	struct extset kept;        /* freed by commits made while pinned: kept
	                              from reuse until the last pin goes (a
	                              reader of the pool file may still use them) */
	unsigned pins;             /* vbas_pool_pin holders */
	struct extset exclude;     /* repair: never handed out until the commit
	                              (what the last commit and the picture use) */
	struct refc_delta *q;      /* queued deltas */
	size_t qhead, qn, qcap;
	int draining;
	uint64_t reserved;         /* blocks promised to reservations */
	uint64_t meta_reserve;     /* blocks kept for metadata (space_size_reserve) */
	uint64_t refc_nodes;       /* nodes of the refcount tree as last committed
	                              (counted at open; refc.grown since) */
	uint64_t meta_rover, data_rover;
	uint64_t meta_allocs_txn;  /* metadata blocks allocated this transaction */
	struct vbas_resv *op_resv; /* the running change's reservation: its
	                              metadata blocks are drawn from it */
	struct vbas_resv *resvs;   /* guarded reservations (resv.c) */
	uint64_t resv_meta;        /* their allowances, summed (in RESERVED) */
	uint64_t resv_meta_granted, resv_meta_used;  /* since open, for info */
	uint64_t overdrawn;        /* metadata blocks taken out of RESERVED by a
	                              change that held none (a bound was wrong) */
	struct vbas_resv *owed;    /* holds the volumes' owed blocks (their
	                              vbas_vol_rec.owed, summed, less those a
	                              write in flight has taken) */
	uint64_t resv_blocks;      /* blocks of reserved ranges in writable
	                              volumes, summed (for info) */
	/* A shrink in progress (shrink.c): nothing is handed out at or past
	 * LIMIT (0: none), and what lies there is counted apart, so that
	 * space_avail says what is free below it. */
	uint64_t limit;
	int64_t used_above;        /* blocks in the refcount tree past LIMIT */
	uint64_t freed_above;      /* of FREED, past LIMIT */
	uint64_t kept_above;       /* of KEPT, past LIMIT */
};

/* A volume that has open handles: shared by them. */
struct vol_state {
	struct vol_state *next;
	uint64_t id;
	int refs;                  /* open handles */
	/* Range lock over logical blocks: held ranges, writers exclusive.
	 * A request for the whole volume (snapshot, clone) that waits takes a
	 * ticket; later requests of threads that hold no range here wait
	 * behind it (map.c, "Range locks"). */
	pthread_mutex_t rl_mu;     /* guards the range lock (below LOCK) */
	struct rl_range *ranges;
	struct rl_waiter *whole_waiting;
	uint64_t tickets;
	pthread_cond_t rl_cond;    /* (rl_mu) a range was let go */
	/* The volume's record as of VOLTAB_GEN (vol_get_open): a read looks
	 * it up once, not twice, in the volume table. */
	struct vbas_vol_rec rec;
	uint64_t rec_gen;          /* 0: none */
};

struct vbas_vol {
	struct vbas_pool *pool;
	struct vol_state *vs;
	uint64_t id;
};

/* A reservation (resv.c).  LEFT data blocks and META metadata blocks are
 * counted in the pool's RESERVED, so nobody else takes them.  A guarded
 * reservation (vbas_reserve, vbas_reserve_range) keeps its own metadata
 * allowance: its writes hold their metadata room out of META, give back
 * what they did not use, and every commit tops META up again to the
 * target (resv_target), out of the blocks the commit freed. */
struct vbas_resv {
	struct vbas_pool *pool;
	int refs;                  /* under pool->lock */
	int guard;                 /* keeps a metadata allowance (public cookies) */
	uint64_t left;             /* data blocks not yet used */
	uint64_t meta;             /* metadata blocks held for the writes */
	unsigned hm;               /* mapping tree levels the allowance assumes */
	uint64_t cow;              /* metadata for copies of shared nodes
	                              (vbas_reserve_range), until the first write */
	/* For vbas_resv_stats: what was held and what the writes took. */
	uint64_t data_granted, meta_granted, meta_used, meta_short;
	struct vbas_resv *prev, *next;  /* guarded ones: pool->resvs */
};

struct vbas_pool {
	pthread_mutex_t lock;      /* all metadata, cache, space */
	/* The trees as readers see them.  Whoever holds LOCK holds this for
	 * writing too (pool_lock), except while it waits for something; a
	 * read's mapping lookup holds it for reading only, without LOCK
	 * (map.c, "Reads without the pool lock"). */
	pthread_rwlock_t tree_lock;
	struct vbas_dev *dev;
	int own_dev;
	struct vbas_cache *cache;
	struct vbas_validator validator;
	struct bt_env env;
	uint32_t bs;
	unsigned bshift;
	uint64_t nblocks;          /* including the superblocks */
	uint8_t uuid[16];
	struct vbas_sb sb;         /* as last committed */
	uint64_t gen;              /* generation of the last commit */
	struct vbas_btree voltab;
	uint64_t voltab_gen;       /* bumped by every change of a volume record */
	struct vbas_btree names;   /* the name index (names.c) */
	int names_on;              /* kept (VBAS_SBF_NAMES): else lookups walk */
	struct vbas_space sp;
	uint64_t next_vol_id;
	uint64_t nvolumes;
	int rdonly;
	int broken;                /* a failed change: read-only until reopen */
	int repair_mode;           /* VBAS_OPEN_REPAIR, until vbas_repair is done */
	char broken_msg[512];
	/* Commits in flight (txn.c): a sealed transaction whose device
	 * flushes and superblock write run without the pool lock.  At most
	 * one; CM_LOCK guards IO_DONE and ERR, the pool lock the rest. */
	struct {
		int active;           /* sealed, not yet finished */
		int meta;             /* writes a superblock (else: a data flush) */
		int io_done, err;
		char msg[160];        /* what failed */
		uint64_t seq;
		struct vbas_sb sb;    /* what it writes */
	} cm;
	pthread_mutex_t cm_lock;
	pthread_cond_t cm_io_cv;      /* (cm_lock) its I/O is done */
	pthread_cond_t cm_done_cv;    /* (pool lock) a commit finished */
	uint64_t seq_sealed, seq_done;        /* commits sealed, finished */
	uint64_t seq_failed;                  /* the last that failed */
	int err_failed;
	int dirty;                 /* changes since the last commit */
	int data_dirty;            /* data written (vbas_map_end of a write) since
	                              the last device flush */
	int deletes_stopped;       /* a delete stopped with ENOSPC: resume it */
	/* vbas_pool_progress: told how far long calls have come. */
	int (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
	/* Operations that span commits (intent.c), as they stand in this
	 * transaction; written to the superblock by every commit. */
	struct vbas_intent intents[VBAS_INTENT_SLOTS];
	int intent_busy[VBAS_INTENT_SLOTS];   /* a running operation holds it */
	pthread_cond_t intent_cond;           /* a slot came free */
	int shrinks;               /* vbas_pool_shrink calls running */
	int shrink_stop;           /* vbas_pool_shrink_stop: they return */
	struct vol_state *open_vols;
	uint64_t commits;
	/* Space settings (vbas_pool_set), permille; in the superblock from
	 * the next commit. */
	unsigned low_water, exp_floor;
	int may_expend;            /* an expendable snapshot may exist */
	/* Events (admin.c). */
	void (*ev_fn)(const struct vbas_event *, void *);
	void *ev_arg;
	int ev_low, ev_meta;       /* above the low-water mark; near the reserve */
	int ev_enospc_sent;        /* a refusal was reported: the next waits for
	                              room to come back (more than ev_enospc_avail) */
	uint64_t ev_enospc_avail, ev_enospc_count;
};

/* abi.c: 0 if the N words of SPARE, the spare room of a struct the caller
 * passed in (struct WHAT), are zero, else -EINVAL with a message. */
int abi_spare_check(const uint32_t *spare, size_t n, const char *what);
#define SPARE_CHECK(s, what) \
	abi_spare_check((s)->spare, sizeof((s)->spare) / sizeof((s)->spare[0]), what)

/* Testing hooks (tests/, fuzz/): a pool on a device of the caller's, such
 * as the in-memory one; not exported by libvbas.so.  MAX_FANOUT caps the
 * records of every tree node (4..65535; 0: as many as fit), so that small
 * tests grow tall trees; it is kept in the superblock. */
int vbas_open_dev(struct vbas_dev *dev, const struct vbas_open_opts *opts,
		  struct vbas_pool **poolp);
int vbas_format_dev(struct vbas_dev *dev, const struct vbas_format_opts *opts,
		    uint32_t max_fanout);

/* The pool lock: LOCK, and TREE_LOCK for writing.  A wait on a condition
 * gives both up. */
static inline void pool_lock(struct vbas_pool *p)
{
	pthread_mutex_lock(&p->lock);
	pthread_rwlock_wrlock(&p->tree_lock);
}

static inline void pool_unlock(struct vbas_pool *p)
{
	pthread_rwlock_unlock(&p->tree_lock);
	pthread_mutex_unlock(&p->lock);
}

static inline void pool_cond_wait(pthread_cond_t *cv, struct vbas_pool *p)
{
	pthread_rwlock_unlock(&p->tree_lock);
	pthread_cond_wait(cv, &p->lock);
	pthread_rwlock_wrlock(&p->tree_lock);
}

/* Limits that bound one transaction and one step of a delete.  Tests lower
 * them to put commits (and crash points) inside small deletes; nothing
 * else changes them. */
struct vbas_tunables {
	uint64_t drop_budget;      /* records and nodes released per delete step */
	uint64_t txn_big_freed;    /* commit when this many freed ranges wait */
	uint64_t txn_big_meta;     /* or this many metadata blocks were written */
	uint64_t usage_batch;      /* mapping records vbas_vol_usage reads per hold
	                              of the pool lock */
	int fsmap_walk;            /* tests only: fsmap walks the trees even with a
	                              reverse map (to compare the two answers) */
	uint64_t shrink_step;      /* blocks a shrink moves before it commits */
	int unshare_commit;        /* tests only: an unshare commits after each
	                              chunk, as another thread's flush may */
	uint64_t names_hash_mask;  /* tests only: fewer hash bits, to make the name
	                              index's hashes collide (~0: all of them) */
	size_t check_spool;        /* tests only: bytes check keeps in memory for
	                              its spools (0: the cache's size) */
	int early_punch;           /* tests only, a bug on purpose: punch the data
	                              blocks a commit frees before its superblock
	                              is written (the crash tests must catch it) */
};
extern struct vbas_tunables vbas_tun;

/* space.c */
int space_load(struct vbas_pool *p);
void space_free(struct vbas_pool *p);
int space_alloc(struct vbas_pool *p, uint64_t hint, uint64_t max, int type,
		int use_reserve, uint64_t *start, uint64_t *got);
/* N contiguous blocks (a shrink's move), lowest first, never out of the
 * metadata reserve or reservations: *START, to PENDING. */
int space_alloc_run(struct vbas_pool *p, uint64_t n, int type, uint64_t *start);
/* Hand out nothing at or past LIMIT (0: no limit) and count what lies
 * there apart (a shrink). */
int space_set_limit(struct vbas_pool *p, uint64_t limit);
/* Every record of the refcount tree in order: CB(ARG, start, len, count,
 * type) returns 0 to go on. */
int space_runs(struct vbas_pool *p, int (*cb)(void *, uint64_t, uint64_t, uint32_t, int),
	       void *arg);
/* The first refcount record that ends past FROM: *START, *LEN, *TYPE;
 * -ENOENT if none. */
int space_next_used(struct vbas_pool *p, uint64_t from, uint64_t *start, uint64_t *len,
		    int *type);
void space_unalloc(struct vbas_pool *p, uint64_t start, uint64_t len);
int space_is_free(struct vbas_pool *p, uint64_t blk);  /* allocatable now */
/* Whether BLK's count changed in this transaction other than by its
 * allocation; *RUN (<= MAX) blocks from BLK answer the same. */
int space_touched(struct vbas_pool *p, uint64_t blk, uint64_t max, uint64_t *run);
/* Count [start, start+len) as touched: written in place only after the
 * next commit (a node the last commit may share was copied). */
int space_mark_touched(struct vbas_pool *p, uint64_t start, uint64_t len);
int space_queue(struct vbas_pool *p, uint64_t start, uint64_t len, int delta,
		int type, int is_alloc);
int space_drain(struct vbas_pool *p);
void space_punch_freed(struct vbas_pool *p);
int space_refcount(struct vbas_pool *p, uint64_t blk, uint32_t *rc, int *type);
/* Count at BLK, a data block (-EUCLEAN if the refcount tree holds it as
 * metadata), and *RUN (>= 1, <= MAX) blocks from BLK that share it. */
int space_refcount_run(struct vbas_pool *p, uint64_t blk, uint64_t max, uint32_t *rc,
		       uint64_t *run);
uint64_t space_avail(struct vbas_pool *p);      /* blocks allocatable now */
/* Metadata blocks one write may need to change the trees (MAP: the
 * volume's mapping tree, or NULL): held back beside the data it needs. */
uint64_t space_op_meta(struct vbas_pool *p, struct vbas_btree *map);
/* Metadata blocks that COW_RECS refcount changes (the children of copied
 * shared nodes: bt_path_cow) may need, on top of space_op_meta. */
uint64_t space_cow_meta(struct vbas_pool *p, uint64_t cow_recs);
/* Metadata blocks a change of the mapping tree MAP may need that maps
 * BLOCKS new blocks into RUNS runs (holes or shared blocks), under nodes
 * holding COW_RECS records to copy: paths, splits, copies. */
uint64_t space_write_meta(struct vbas_pool *p, struct vbas_btree *map, uint64_t runs,
			  uint64_t blocks, uint64_t cow_recs);
/* Reservation allowances (resv.c): levels a mapping tree of a pool this
 * size may have; the room of a one-block write into a tree of HM levels;
 * the nodes N blocks written may add to the trees for good. */
unsigned space_map_levels(struct vbas_pool *p);
uint64_t space_resv_step(struct vbas_pool *p, unsigned hm);
uint64_t space_resv_growth(struct vbas_pool *p, unsigned hm, uint64_t n);
/* Metadata blocks the refcount tree's own churn may take in one
 * transaction, beside what the changes themselves shadow. */
uint64_t space_cascade(struct vbas_pool *p);
/* Size the metadata reserve: 1/128 of the pool (64 .. 65,536 blocks), and
 * at least twice a delete step plus space_cascade; at most a quarter of
 * the pool.  At open, after drains that grew the refcount tree, and at
 * every commit. */
void space_size_reserve(struct vbas_pool *p);
/* Metadata blocks a change of the counts of N consecutive blocks may need
 * (at most one record per block; leaves at least a quarter full). */
uint64_t space_range_meta(struct vbas_pool *p, uint64_t n);
/* Who may use the metadata reserve.  A change that may grow metadata
 * without freeing anything (discard or shrink under a snapshot, a new
 * volume) keeps half of it; data writes and new reservations keep all
 * of it (SPACE_DATA); a delete, which is what lets a full pool free
 * space, may use all of it (docs/design.md, "A full pool"). */
enum space_class { SPACE_DATA, SPACE_GROW, SPACE_FREE };
/* Room for one step of a change that may take NEED metadata blocks (a
 * bound) before anything it frees comes back: 0, or after a commit that
 * gave back the blocks freed so far, or -ENOSPC (WHAT: for the message)
 * with nothing changed.  Pool lock held; may commit. */
int space_room(struct vbas_pool *p, uint64_t need, enum space_class cls, const char *what);
/* Blocks a change of class CLS may take now (no commit). */
uint64_t space_room_free(struct vbas_pool *p, enum space_class cls);
uint64_t space_free_blocks(struct vbas_pool *p);/* free incl. freed-this-txn */
/* Before the superblock is written: room to keep FREED if pinned, so
 * that space_committed cannot fail. */
int space_precommit(struct vbas_pool *p);
void space_committed(struct vbas_pool *p);
/* The running transaction is sealed for its commit: its freed and touched
 * sets become the ones in flight. */
void space_seal(struct vbas_pool *p);
/* Blocks freed in the running transaction and in a commit in flight: they
 * come back with the next commit. */
uint64_t space_freed_total(const struct vbas_pool *p);
int space_pin(struct vbas_pool *p);
void space_unpin(struct vbas_pool *p);
void space_abort(struct vbas_pool *p);
extern const struct vbas_btree_ops refc_ops;

/* check.c: every reference the pool's trees hold, for repair: the
 * volume table's and every mapping tree's (and the refcount tree's and
 * the reverse map's nodes as WHAT says: PIC_*), as maximal runs of one
 * count and type in block order, and the mapping leaves' records as the reverse map
 * must hold them (FW, with a reverse map).  Problems met go to CB and are
 * counted in PROBLEMS. */
struct pic_run {
	uint64_t start, len;
	uint32_t count;
	uint8_t type;
};
/* A mapping-tree node that could not be read: where its parent says it
 * is, and the keys it gives it ([lo, hi); hi UINT64_MAX: unbounded). */
struct pic_bad {
	uint64_t blk, txid, vol, lo, hi;
	int level;                 /* -1: a root */
};
struct pic {
	struct pic_run *v;
	size_t n, cap;
	struct rmap_set fw;
	uint64_t problems;
	struct pic_bad *bad;
	size_t nbad, capbad;
};
#define PIC_REFC 1u
#define PIC_RMAP 2u
#define PIC_NAMES 4u               /* the name index's nodes (vbas_check: and
                                      its records against the volume table) */
int check_picture(struct vbas_pool *p, unsigned what, struct pic *out,
		  void (*cb)(const char *, void *), void *arg);
/* Whether the name index can be read and matches the volume table (1
 * also when the pool keeps none), for repair. */
int check_names_ok(struct vbas_pool *p, int *ok);
void pic_free(struct pic *pc);

/* space.c, for repair: a new refcount tree holding RUNS (what the last
 * commit uses stays in sp.exclude until the commit). */
int space_rebuild_refc(struct vbas_pool *p, const struct pic_run *runs, size_t n);
/* Add [start, start+len) to S where it is not already. */
int extset_add_new(struct extset *s, uint64_t start, uint64_t len);

/* rmap.c: the reverse map. */
extern const struct vbas_btree_ops rmap_ops;
void rmap_to_irec(const void *rec, struct rmap_irec *ir);
int rmap_irec_cmp(const void *a, const void *b);
void rmap_key(void *key, uint64_t pblk, uint64_t owner, uint64_t lblk, uint32_t len);
int rmap_set_add(struct rmap_set *s, uint64_t pblk, uint64_t owner, uint64_t lblk,
		 uint32_t len, int64_t count);
/* Sort, and sum the counts of equal keys into one record. */
void rmap_set_sum(struct rmap_set *s);
void rmap_set_free(struct rmap_set *s);
/* Record (pblk, lblk, len) entered (+1) or left (-1) a mapping leaf of
 * lineage OWNER: queued for space_drain. */
int rmap_queue(struct vbas_pool *p, uint64_t pblk, uint64_t owner, uint64_t lblk,
	       uint32_t len, int delta);
int rmap_apply(struct vbas_pool *p);
/* A new reverse map holding the records of S (sorted, counts summed), in
 * the running transaction. */
int rmap_load(struct vbas_pool *p, const struct rmap_set *s);
/* Records overlapping physical blocks [LO, HI), in key order. */
int rmap_query(struct vbas_pool *p, uint64_t lo, uint64_t hi,
	       int (*cb)(void *, const struct rmap_irec *), void *arg);
/* What the rmap should hold, from a walk of every mapping tree (each
 * leaf once): sorted, counts summed. */
int rmap_collect(struct vbas_pool *p, struct rmap_set *out);

/* names.c: the name index. */
extern const struct vbas_btree_ops names_ops;
uint64_t names_hash(const char *name, size_t len);
void names_init(struct vbas_pool *p);
int names_add(struct vbas_pool *p, uint64_t id, const char *name);
int names_del(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec);
/* 0 with ID (and REC), -ENOENT, or an error reading the trees. */
int names_find(struct vbas_pool *p, const char *name, uint64_t *id, struct vbas_vol_rec *rec);
int names_build(struct vbas_pool *p);
/* Repair: a new index in place of the old (whose nodes the caller keeps
 * from the allocator), in the running transaction. */
int names_rebuild(struct vbas_pool *p);
unsigned names_voltab_levels(struct vbas_pool *p);

/* txn.c */
int txn_commit(struct vbas_pool *p);
/* A commit in flight: wait for its I/O (without giving up the pool lock:
 * that I/O never takes it) and finish it. */
void txn_wait_io(struct vbas_pool *p);
/* vbas_flush: group commit, the device flushes outside the pool lock. */
int txn_flush(struct vbas_pool *p);
int txn_read_sb(struct vbas_dev *dev, struct vbas_sb *sb, uint32_t *slot_out);
void txn_fail(struct vbas_pool *p, int err);   /* abandon changes, latch RO */
int txn_writable(struct vbas_pool *p, const char *what);
int txn_maybe_commit(struct vbas_pool *p);
uint32_t sb_csum(const struct vbas_sb *sb);

/* volume.c */
extern const struct vbas_btree_ops voltab_ops;
extern const struct vbas_btree_ops map_ops;
int vol_lookup_name(struct vbas_pool *p, const char *name, uint64_t *id,
		    struct vbas_vol_rec *rec);
int vol_get(struct vbas_pool *p, uint64_t id, struct vbas_vol_rec *rec);
/* The same for an open volume, from its state while no record changed. */
int vol_get_open(struct vbas_pool *p, struct vol_state *vs, struct vbas_vol_rec *rec);
/* Why N bytes cannot name a new volume (not UTF-8, a control character;
 * *AT the byte), or NULL; and a name shown with such bytes as \xNN. */
const char *name_problem(const char *name, size_t n, size_t *at);
const char *name_shown(const char *name, size_t n, char *buf, size_t len);
int vol_put(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec);
/* Record T's root (block and transaction) in REC. */
void vol_set_root(struct vbas_vol_rec *rec, const struct vbas_btree *t);
void vol_map_tree(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec,
		  struct vbas_btree *t);
/* A long call's progress (vbas_pool_progress): -EINTR (said, WHAT
 * stopped) if the caller's callback asks it to stop. */
static inline int pool_progress(struct vbas_pool *p, const char *what, uint64_t done,
				uint64_t total)
{
	if (!p->progress || !p->progress(p->progress_arg, done < total ? done : total, total))
		return 0;
	return vbas_err(-EINTR, "%s: stopped by the caller", what);
}
int vol_resume_deletes(struct vbas_pool *p);

/* intent.c: operations that span commits, in the superblock's slots. */
const char *intents_invalid(const struct vbas_sb *sb);
/* A free slot (waits, dropping the pool lock, while all are held; never
 * with range locks held): *SLOT, then filled by intent_begin. */
int intent_reserve(struct vbas_pool *p, int *slot);
void intent_begin(struct vbas_pool *p, int slot, unsigned type, const uint64_t arg[6]);
/* Both. */
int intent_take(struct vbas_pool *p, unsigned type, const uint64_t arg[6], int *slot);
/* Its progress: ARG[IDX] = VAL, in the running transaction. */
void intent_set(struct vbas_pool *p, int slot, unsigned idx, uint64_t val);
/* Done (or given up): the slot is free from the next commit on. */
void intent_drop(struct vbas_pool *p, int slot);
/* At open: finish what the last commit's intents describe. */
int intents_replay(struct vbas_pool *p);
/* share.c: the rest of a reflink or an unshare (intent SLOT's ARG). */
int share_resume_reflink(struct vbas_pool *p, int slot, const uint64_t a[6]);
int share_resume_unshare(struct vbas_pool *p, int slot, const char *name, const uint64_t a[6]);

/* shrink.c: go on with a shrink a crash or an error left (at open). */
int shrink_resume(struct vbas_pool *p);
int vol_sum_mapped(struct vbas_pool *p, uint64_t *blocks);   /* live volumes */

/* admin.c */
/* Blocks available for new data: free less the metadata reserve and what
 * reservations hold (vbas_pool_info's AVAILABLE). */
uint64_t space_available(struct vbas_pool *p);
/* Fire the threshold events whose state changed (pool lock held). */
void ev_check(struct vbas_pool *p);
static inline void ev_space(struct vbas_pool *p) { if (p->ev_fn) ev_check(p); }
/* A change was refused for want of NEED blocks. */
void ev_enospc(struct vbas_pool *p, uint64_t need);
void ev_expended(struct vbas_pool *p, const char *name);
/* The pool uses a format 4 feature from this commit on. */
void txn_need_v4(struct vbas_pool *p);
/* Room for NEED blocks of new data (and their metadata) for a change of
 * class SPACE_DATA: 0, possibly after a commit (blocks freed come back) or
 * after deleting expendable snapshots (*EXPENDED set: volumes' records may
 * have changed, re-read them); or -ENOSPC (reported as an event; the
 * caller says why). */
int space_make_room(struct vbas_pool *p, uint64_t need, int *expended);

/* volume.c: delete expendable snapshots, oldest first, while the room
 * for data is below NEED blocks plus the floor: 1 if one was deleted. */
int vol_expend(struct vbas_pool *p, uint64_t need);

/* resv.c */
/* Top every guarded reservation's allowance up to its target (commit). */
void resv_refill(struct vbas_pool *p);
/* Hold NEED metadata blocks for a step of RV's writes: out of the
 * allowance, else (after a commit if blocks freed would help) out of the
 * free room; returns what it holds, counted in RESERVED. */
uint64_t resv_hold(struct vbas_pool *p, struct vbas_resv *rv, uint64_t need);
/* The step is done: UNUSED of what it held was not used; it allocated
 * ALLOCATED metadata blocks in all, OVERDRAWN of them out of reserved room. */
void resv_unhold(struct vbas_pool *p, struct vbas_resv *rv, uint64_t unused, uint64_t allocated,
		 uint64_t overdrawn);
/* An unguarded reservation of DATA blocks and META metadata blocks
 * (vbas_pwrite, vbas_unshare: META is their bound for all their steps,
 * and each step holds what is left of it). */
int resv_new(struct vbas_pool *p, uint64_t data, uint64_t meta, struct vbas_resv **rvp);
void resv_put_locked(struct vbas_resv *rv);

/* map.c */
#define MAP_KEEP_RESERVED 0x1u     /* reserved extents stay mapped */
#define MAP_COW           0x2u     /* the caller maps the range again at once */
int map_unmap(struct vbas_pool *p, uint64_t id, struct vbas_vol_rec *rec,
	      uint64_t lblk, uint64_t n, const char *steps, uint64_t *stopped, unsigned how);
int map_lookup(struct vbas_pool *p, struct vbas_btree *t, uint64_t lblk,
	       uint64_t *pblk, uint64_t *len, int *mapped);
int map_lookup_f(struct vbas_btree *t, uint64_t lblk, uint64_t *pblk, uint64_t *len,
		 int *mapped, uint32_t *flags);
/* map_lookup, and whether the blocks are shared (a shared tree node on the
 * path, or data blocks with more than one reference): *LEN is cut to a run
 * that is all shared or all not.  COW (or NULL): bt_path_cow's count, for
 * holes too.  FOR_WRITE: "shared" as a write must treat it, which includes
 * counts changed in this transaction (the last commit may share them). */
int map_lookup_shared(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen,
		      uint64_t lblk, uint64_t *pblk, uint64_t *len, int *mapped, int *shared,
		      struct bt_cow *cow, int for_write);
int map_lookup_shared_f(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen,
			uint64_t lblk, uint64_t *pblk, uint64_t *len, int *mapped, int *shared,
			struct bt_cow *cow, int for_write, uint32_t *flags);
/* What [lblk, lblk+n) of a volume's tree T holds: holes and shared
 * blocks, and the runs of each (map_lookup_shared's runs). */
struct map_census {
	uint64_t holes, hole_runs, shared, shared_runs;
	uint64_t shared_resv, shared_resv_runs;   /* of SHARED: reserved blocks */
	struct bt_cow cow;         /* records under shared nodes on the paths */
};
int map_census(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen, uint64_t lblk,
	       uint64_t n, struct map_census *c);
/* What a write of the census's range needs from the free room: a block
 * for every hole and shared block, less the copies of reserved blocks the
 * volume's OWED blocks pay for; and the runs of those (RUNS may be NULL). */
void map_census_needs(const struct map_census *c, uint64_t owed, uint64_t *blocks,
		      uint64_t *runs);
/* Call CB for each run of [lblk, lblk+n) of T as a write sees it (a hole,
 * or blocks shared or not, of one extent); with COW, count the shared
 * nodes on the paths, the one past the end included.  A non-zero return
 * of CB stops the walk and is returned. */
struct map_run {
	uint64_t lblk, n, pblk;
	int mapped, shared;
	uint32_t flags;            /* VBAS_MAPF_* (0 for a hole) */
};
int map_walk(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen, uint64_t lblk,
	     uint64_t n, struct bt_cow *cow, int (*cb)(void *, const struct map_run *), void *arg);
/* Extents of T that overlap [lblk, lblk+n), counting at most MAX that
 * start inside it: *STOP is where the first one past MAX starts (else
 * lblk+n). */
int map_count(struct vbas_btree *t, uint64_t lblk, uint64_t n, uint64_t max, uint64_t *count,
	      uint64_t *stop);
/* Map [lblk, lblk+n) -> pblk.. into a hole of T (no counts changed). */
int map_insert(struct vbas_btree *t, uint64_t lblk, uint64_t pblk, uint64_t n, uint32_t flags);
int map_set_flags(struct vbas_btree *t, uint64_t lblk, uint64_t n, uint32_t flags,
		  uint64_t *changed);

/* Reserved ranges (prealloc.c). */
void vol_resv_add(struct vbas_pool *p, struct vbas_vol_rec *rec, uint64_t n);
void vol_resv_sub(struct vbas_pool *p, struct vbas_vol_rec *rec, uint64_t n, int clamp);
void owed_free(struct vbas_pool *p);
int owed_load(struct vbas_pool *p);
int owed_grow(struct vbas_pool *p, uint64_t n, const char *what);
void owed_release(struct vbas_pool *p, uint64_t n);
int owed_recount(struct vbas_pool *p);
/* Internal vbas_map_begin flag: a write that leaves holes as holes (it
 * only copies shared blocks: unshare). */
#define VBAS_MAP_NOALLOC 0x100u
/* Internal vbas_map_begin flag: the caller holds the range lock over the
 * whole range already (vbas_pwrite: counting, reserving and writing under
 * one lock, so a racing discard cannot open a hole the reservation does
 * not cover). */
#define VBAS_MAP_LOCKED 0x200u
/* Internal vbas_map_begin flag: RESV holds room for the metadata of the
 * change too (vbas_pwrite, vbas_unshare reserve it); map_end draws the
 * metadata blocks from it. */
#define VBAS_MAP_METAHELD 0x400u
/* Internal vbas_map_begin flag, with METAHELD: the caller writes every
 * block of the range wholly but the first and the last (vbas_pwrite).  A
 * new mapping may then run on past the first hole or shared extent over
 * the holes and shared extents after it: one allocation, one device write
 * and one change of the tree for a range a snapshot has cut into pieces.
 * It stops before the last block if the write ends inside it and it lies
 * past the first piece, since cow_physical gives the old contents of the
 * first piece only. */
#define VBAS_MAP_SPAN 0x800u
/* The library's state of a mapping, from map_begin to vbas_map_end: kept in
 * the opaque PRIV area of the caller's struct vbas_iomap, and read and
 * written only through map_priv() (may_alias: PRIV is an array of
 * uint64_t). */
struct __attribute__((may_alias)) map_priv {
	uint64_t blk;              /* first logical block locked */
	uint64_t nblk;             /* blocks locked */
	uint64_t pblk;             /* NEW: first physical block allocated */
	struct vbas_resv *resv;    /* NEW: the reservation the blocks came from */
	uint64_t meta;             /* NEW: metadata blocks held back for map_end */
	uint32_t cow;              /* NEW: MP_COW_* (0: it replaces a hole) */
	uint32_t state;            /* MP_ST_* (0: no mapping) */
};
/* map_priv.cow, of a NEW mapping: */
#define MP_COW_SHARED    0x1u      /* it replaces shared blocks */
#define MP_COW_RESERVED  0x2u      /* of a reserved range: the new extent is too */
#define MP_COW_OWED      0x4u      /* its blocks are the volume's owed ones */
/* map_priv.state: what the mapping holds, for vbas_map_end to let go.
 * MP_ST_LOCKED: the caller holds the range lock (VBAS_MAP_LOCKED), and
 * map_end leaves it to it; MP_ST_METAHELD: the caller holds the metadata
 * room of all its steps (VBAS_MAP_METAHELD), and map_end does not commit
 * between them. */
#define MP_ST_READ       0x1u      /* a read: a shared range lock */
#define MP_ST_WRITE      0x2u      /* a write: an exclusive range lock */
#define MP_ST_KIND       0x3u      /* (which of the two) */
#define MP_ST_LOCKED     0x4u
#define MP_ST_METAHELD   0x8u
_Static_assert(sizeof(struct map_priv) <= sizeof(((struct vbas_iomap *)0)->priv) &&
	       _Alignof(struct map_priv) <= _Alignof(uint64_t),
	       "struct map_priv must fit struct vbas_iomap's priv area");
static inline struct map_priv *map_priv(struct vbas_iomap *map)
{
	return (struct map_priv *)(void *)map->priv;
}
/* vbas_map_begin with the internal flags above. */
int map_begin(struct vbas_vol *vol, uint64_t off, uint64_t len, unsigned flags,
	      struct vbas_resv *resv, struct vbas_iomap *map);
/* Range locks over a volume's logical blocks; called with pool->lock held. */
int rl_lock(struct vbas_pool *p, struct vol_state *vs, uint64_t start, uint64_t n, int excl);
void rl_unlock(struct vbas_pool *p, struct vol_state *vs, uint64_t start, uint64_t n, int excl);
/* An exclusive range, now or -EBUSY (never waits). */
int rl_trylock(struct vol_state *vs, uint64_t start, uint64_t n);
/* The shared state of volume ID if it has open handles, with a reference
 * (NULL if none); vol_state_put drops it. */
struct vol_state *vol_state_get(struct vbas_pool *p, uint64_t id);
void vol_state_put(struct vbas_pool *p, struct vol_state *vs);

/* Helpers. */
static inline uint64_t bytes_to_blocks(const struct vbas_pool *p, uint64_t b)
{
	return b >> p->bshift;
}

#endif
