/* Per-thread error messages: vbas_err() records a message for the calling
 * thread and returns the errno it was given, so failures read
 *     return vbas_err(-ENOENT, "volume %s: not found", name);
 */
#ifndef VBAS_ERRMSG_H
#define VBAS_ERRMSG_H

int vbas_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message: "CONTEXT: <old message>". */
int vbas_err_ctx(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vbas_err_clear(void);

#endif
