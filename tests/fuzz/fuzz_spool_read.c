/*
 * fuzz_spool_read.c - the spool file parser (src/queue/spool.c).  What it
 * accepts is written again with the spool writer and must read back the same.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"

static char dir[64];

static void remove_tmpdir(void)
{
    char sub[96];
    snprintf(sub, sizeof sub, "%s/x", dir);
    rmdir(sub);
    rmdir(dir);
}

/* A directory for the files written back, removed at exit (they are removed
 * as soon as read). */
static const char *tmpdir(void)
{
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "/tmp/fuzz_spool.XXXXXX");
        if (mkdtemp(dir) == NULL)
            abort();
        char sub[96];
        snprintf(sub, sizeof sub, "%s/x", dir);
        if (mkdir(sub, 0700) == -1)
            abort();
        atexit(remove_tmpdir);
    }
    return dir;
}

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    struct queue_env env, back;
    char *data = NULL, *data2 = NULL, err[256];
    size_t len = 0, len2 = 0;
    if (spool_parse((const char *)in, n, &env, &data, &len, err, sizeof err) != 0) {
        if (err[0] == '\0')
            abort();   /* a refusal always says why */
        queue_env_free(&env);
        return 0;
    }
    if (env.nrcpts == 0 || env.sender == NULL || strlen(env.qid) != QUEUE_ID_LEN ||
        env.size != len)
        abort();
    for (size_t i = 0; i < QUEUE_ID_LEN; i++)
        if (!strchr("0123456789ABCDEF", env.qid[i]))
            abort();   /* it names files */
    /* written again (the statuses are appended records, not written here) */
    if (spool_write_file(tmpdir(), "x", env.qid, &env, data, len, false) != 0)
        goto out;      /* e.g. a record too long for the writer's buffer */
    char path[128];
    snprintf(path, sizeof path, "%s/x/%s", tmpdir(), env.qid);
    if (spool_read(path, &back, &data2, &len2, err, sizeof err) != 0) {
        fprintf(stderr, "written back and refused: %s\n", err);
        abort();
    }
    unlink(path);
    if (len2 != len || (len && memcmp(data, data2, len) != 0) || back.nrcpts != env.nrcpts ||
        strcmp(back.qid, env.qid) != 0 || !same(back.sender, env.sender) ||
        back.arrival != env.arrival || !same(back.stage, env.stage) ||
        !same(back.auth_user, env.auth_user) || back.requiretls != env.requiretls)
        abort();
    for (size_t i = 0; i < env.nrcpts; i++)
        if (!same(back.rcpts[i].addr, env.rcpts[i].addr) ||
            back.rcpts[i].notify != env.rcpts[i].notify)
            abort();
    free(data2);
    queue_env_free(&back);
out:
    free(data);
    queue_env_free(&env);
    return 0;
}
