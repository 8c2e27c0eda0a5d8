/* In-memory device with simulated power loss, for tests.
 *
 * The device keeps two images: CUR, what reads see (every write applied),
 * and DURABLE, what a power loss keeps for certain (the state at the last
 * flush).  Writes since the last flush are also kept as a list.  At power
 * loss the surviving image is DURABLE plus each pending write, per mode:
 *   DROP     a write may be lost entirely
 *   REORDER  the writes that survive land in a random order, so an older
 *            write to the same place may win over a newer one
 *   TEAR     a write may land only in part: a random subset of its
 *            512-byte sectors
 * (the idea of SQLite's crash VFS).  After power loss every I/O fails.
 *
 * A discard is a write like the others (it counts as one, and is dropped,
 * reordered or torn at power loss in the same way), of "unknown contents":
 * a discarded range reads as DISCARD_BYTE, neither zeros nor the old data,
 * since a caller may rely on neither (a file's punched hole reads as
 * zeros, an SSD's trimmed blocks may return either).  A range whose
 * discard power loss drops keeps its old data.  So a discard that lands
 * too early -- of blocks the last durable commit still uses -- shows up as
 * DISCARD_BYTE in what the crash tests read back after the crash. */
#include "device.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define DISCARD_BYTE 0xdc

struct pending {
	uint64_t off;
	size_t len;
	uint8_t *data;            /* NULL: a discard */
};

/* Bytes [FROM, TO) of the device as pending change P leaves them, into DST
 * (the image). */
static void land(uint8_t *dst, const struct pending *p, uint64_t from, uint64_t to)
{
	if (p->data)
		memcpy(dst + from, p->data + (from - p->off), to - from);
	else
		memset(dst + from, DISCARD_BYTE, to - from);
}

struct memdev {
	struct vbas_dev dev;
	pthread_mutex_t lock;
	uint8_t *cur;
	uint8_t *durable;
	struct pending *pend;
	size_t npend, cappend;
	uint64_t writes;          /* writes so far */
	uint64_t discards;        /* of which discards */
	int armed;
	uint64_t crash_at;        /* power is lost at this write count */
	unsigned mode;
	uint64_t seed;
	int dead;
	uint8_t *survivor;        /* image at power loss */
	int fail_armed;
	uint64_t fail_at;
};

static uint64_t rnd(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void clear_pending(struct memdev *m)
{
	for (size_t i = 0; i < m->npend; i++)
		free(m->pend[i].data);
	m->npend = 0;
}

static void power_loss(struct memdev *m)
{
	uint64_t s = m->seed;
	size_t n = m->npend;
	size_t *order = malloc((n ? n : 1) * sizeof(*order));

	m->survivor = malloc(m->dev.size);
	if (!m->survivor || !order)
		abort();
	memcpy(m->survivor, m->durable, m->dev.size);
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	if (m->mode & VBAS_CRASH_REORDER)
		for (size_t i = n; i > 1; i--) {
			size_t j = rnd(&s) % i, t = order[i - 1];
			order[i - 1] = order[j];
			order[j] = t;
		}
	for (size_t k = 0; k < n; k++) {
		struct pending *p = &m->pend[order[k]];
		uint64_t r = rnd(&s) % 4;
		if ((m->mode & VBAS_CRASH_DROP) && r == 0)
			continue;
		if ((m->mode & VBAS_CRASH_TEAR) && r == 1 && p->len > 1) {
			/* Whole 512-byte sectors of the device land or not. */
			uint64_t o = p->off;
			while (o < p->off + p->len) {
				uint64_t e = (o / 512 + 1) * 512;
				if (e > p->off + p->len)
					e = p->off + p->len;
				if (rnd(&s) & 1)
					land(m->survivor, p, o, e);
				o = e;
			}
			continue;
		}
		land(m->survivor, p, p->off, p->off + p->len);
	}
	free(order);
	m->dead = 1;
}

/* Count one write, discard or flush; lose power when the armed count is
 * reached. */
static int tick(struct memdev *m)
{
	if (m->dead)
		return -EIO;
	if (m->armed && m->writes >= m->crash_at) {
		power_loss(m);
		return -EIO;
	}
	m->writes++;
	return 0;
}

static int mem_pread(struct vbas_dev *d, void *buf, size_t len, uint64_t off)
{
	struct memdev *m = (struct memdev *)d;
	int r = 0;
	if (off > d->size || len > d->size - off)
		return -ERANGE;
	pthread_mutex_lock(&m->lock);
	if (m->dead)
		r = -EIO;
	else
		memcpy(buf, m->cur + off, len);
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* A write of BUF (NULL: a discard) until the next flush; it shows in CUR
 * at once. */
static void add_pending(struct memdev *m, const void *buf, size_t len, uint64_t off)
{
	if (m->npend == m->cappend) {
		size_t c = m->cappend ? m->cappend * 2 : 64;
		struct pending *q = realloc(m->pend, c * sizeof(*q));
		if (!q)
			abort();
		m->pend = q;
		m->cappend = c;
	}
	struct pending *p = &m->pend[m->npend++];
	p->off = off;
	p->len = len;
	p->data = NULL;
	if (buf) {
		p->data = malloc(len);
		if (!p->data)
			abort();
		memcpy(p->data, buf, len);
	}
	land(m->cur, p, off, off + len);
}

static int mem_pwrite(struct vbas_dev *d, const void *buf, size_t len, uint64_t off)
{
	struct memdev *m = (struct memdev *)d;
	int r;
	if (off > d->size || len > d->size - off)
		return -ERANGE;
	pthread_mutex_lock(&m->lock);
	if (m->fail_armed && m->writes == m->fail_at && !m->dead) {
		m->fail_armed = 0;
		m->writes++;
		pthread_mutex_unlock(&m->lock);
		return -EIO;
	}
	r = tick(m);
	if (!r)
		add_pending(m, buf, len, off);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_flush(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	int r;
	pthread_mutex_lock(&m->lock);
	r = tick(m);
	if (!r) {
		for (size_t i = 0; i < m->npend; i++)
			land(m->durable, &m->pend[i], m->pend[i].off,
			     m->pend[i].off + m->pend[i].len);
		clear_pending(m);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_discard(struct vbas_dev *d, uint64_t off, uint64_t len)
{
	struct memdev *m = (struct memdev *)d;
	int r;
	if (off > d->size || len > d->size - off)
		return -ERANGE;
	if (!len)
		return 0;
	pthread_mutex_lock(&m->lock);
	r = tick(m);
	if (!r) {
		add_pending(m, NULL, (size_t)len, off);
		m->discards++;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static void mem_destroy(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	clear_pending(m);
	free(m->pend);
	free(m->cur);
	free(m->durable);
	free(m->survivor);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int mem_grow(struct vbas_dev *d, uint64_t size)
{
	return d->size >= size ? 0 : -ENOSPC;
}

static const struct vbas_dev_ops mem_ops = {
	.name = "memory",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.flush = mem_flush,
	.discard = mem_discard,
	.grow = mem_grow,
	.destroy = mem_destroy,
};

int vbas_memdev_grow(struct vbas_dev *d, uint64_t size)
{
	struct memdev *m = (struct memdev *)d;
	int r = 0;
	pthread_mutex_lock(&m->lock);
	if (size > d->size) {
		uint8_t *c = realloc(m->cur, size), *u = c ? realloc(m->durable, size) : NULL;
		if (c)
			m->cur = c;
		if (u)
			m->durable = u;
		if (!c || !u) {
			r = -ENOMEM;
		} else {
			memset(c + d->size, 0, size - d->size);
			memset(u + d->size, 0, size - d->size);
			d->size = size;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static struct memdev *memdev_new(uint64_t size)
{
	struct memdev *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->dev.ops = &mem_ops;
	m->dev.size = size;
	m->dev.fd = -1;
	m->dev.align = 1;
	m->cur = calloc(1, size);
	m->durable = calloc(1, size);
	if (!m->cur || !m->durable) {
		free(m->cur);
		free(m->durable);
		free(m);
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

struct vbas_dev *vbas_memdev_create(uint64_t size)
{
	struct memdev *m = memdev_new(size);
	return m ? &m->dev : NULL;
}

static struct vbas_dev *from_image(const uint8_t *img, uint64_t size)
{
	struct memdev *m = memdev_new(size);
	if (!m)
		return NULL;
	memcpy(m->cur, img, size);
	memcpy(m->durable, img, size);
	return &m->dev;
}

struct vbas_dev *vbas_memdev_clone(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	struct vbas_dev *n;
	pthread_mutex_lock(&m->lock);
	n = from_image(m->cur, d->size);
	pthread_mutex_unlock(&m->lock);
	return n;
}

void vbas_memdev_arm_crash(struct vbas_dev *d, uint64_t after, unsigned mode, uint64_t seed)
{
	struct memdev *m = (struct memdev *)d;
	pthread_mutex_lock(&m->lock);
	m->armed = 1;
	m->crash_at = m->writes + after;
	m->mode = mode;
	m->seed = seed;
	pthread_mutex_unlock(&m->lock);
}

void vbas_memdev_crash_now(struct vbas_dev *d, unsigned mode, uint64_t seed)
{
	struct memdev *m = (struct memdev *)d;
	pthread_mutex_lock(&m->lock);
	if (!m->dead) {
		m->mode = mode;
		m->seed = seed;
		power_loss(m);
	}
	pthread_mutex_unlock(&m->lock);
}

int vbas_memdev_crashed(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	int r;
	pthread_mutex_lock(&m->lock);
	r = m->dead;
	pthread_mutex_unlock(&m->lock);
	return r;
}

struct vbas_dev *vbas_memdev_survivor(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	struct vbas_dev *n = NULL;
	pthread_mutex_lock(&m->lock);
	if (m->survivor)
		n = from_image(m->survivor, d->size);
	pthread_mutex_unlock(&m->lock);
	return n;
}

void vbas_memdev_fail_write(struct vbas_dev *d, uint64_t n)
{
	struct memdev *m = (struct memdev *)d;
	pthread_mutex_lock(&m->lock);
	m->fail_armed = 1;
	m->fail_at = m->writes + n;
	pthread_mutex_unlock(&m->lock);
}

uint64_t vbas_memdev_writes(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	uint64_t w;
	pthread_mutex_lock(&m->lock);
	w = m->writes;
	pthread_mutex_unlock(&m->lock);
	return w;
}

uint64_t vbas_memdev_discards(struct vbas_dev *d)
{
	struct memdev *m = (struct memdev *)d;
	uint64_t n;
	pthread_mutex_lock(&m->lock);
	n = m->discards;
	pthread_mutex_unlock(&m->lock);
	return n;
}

uint8_t *vbas_memdev_image(struct vbas_dev *d)
{
	return ((struct memdev *)d)->cur;
}
