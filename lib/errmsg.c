#include "errmsg.h"
#include "vbas.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char msg[1024];

int vbas_err(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err;
}

int vbas_err_ctx(int err, const char *fmt, ...)
{
	char old[sizeof(msg)], ctx[256];
	va_list ap;
	memcpy(old, msg, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	int n = snprintf(msg, sizeof(msg), "%s: ", ctx);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return err;
	const char *src = old[0] ? old : strerror(err < 0 ? -err : err);
	size_t room = sizeof(msg) - (size_t)n - 1, l = strlen(src);
	if (l > room)
		l = room;
	memcpy(msg + n, src, l);
	msg[(size_t)n + l] = 0;
	return err;
}

void vbas_err_clear(void)
{
	msg[0] = 0;
}

const char *vbas_errmsg(void)
{
	return msg;
}
