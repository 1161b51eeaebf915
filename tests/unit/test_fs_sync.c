/* fs_syncfs_shared (src/lib/fs_sync.c): every caller returns only after a
 * syncfs that started after it arrived has finished; concurrent callers share
 * them; a failure reaches the callers it concerns.  syncfs is wrapped
 * (-Wl,--wrap=syncfs) to take 2 ms and to record when each call ran. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int __real_syncfs(int fd);

#define MAX_SYNCS 4096
static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int64_t start, end; } syncs[MAX_SYNCS];
static size_t nsyncs;
static volatile int fail_next;   /* the next wrapped syncfs fails with EIO */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int __wrap_syncfs(int fd)
{
    int64_t start = now_ns();
    struct timespec d = {0, 2 * 1000 * 1000};
    nanosleep(&d, NULL);
    int r = __real_syncfs(fd);
    int fail = __atomic_exchange_n(&fail_next, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&rec_lock);
    if (nsyncs < MAX_SYNCS) {
        syncs[nsyncs].start = start;
        syncs[nsyncs].end = now_ns();
        nsyncs++;
    }
    pthread_mutex_unlock(&rec_lock);
    if (fail) {
        errno = EIO;
        return -1;
    }
    return r;
}

/* true if a recorded syncfs ran entirely within [from, to] */
static bool covered(int64_t from, int64_t to)
{
    bool ok = false;
    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < nsyncs && !ok; i++)
        ok = syncs[i].start >= from && syncs[i].end <= to;
    pthread_mutex_unlock(&rec_lock);
    return ok;
}

static int dirfd_tmp(void)
{
    fs_mkdirs(TEST_TMPDIR, 0700);
    int fd = open(TEST_TMPDIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static void test_one_caller(void **state)
{
    (void)state;
    int fd = dirfd_tmp();
    uint64_t c0, s0, c1, s1;
    fs_syncfs_stats(&c0, &s0);
    int64_t t0 = now_ns();
    assert_int_equal(fs_syncfs_shared(fd), 0);
    assert_true(covered(t0, now_ns()));
    assert_int_equal(fs_sync_dir_fs(TEST_TMPDIR), 0);
    fs_syncfs_stats(&c1, &s1);
    assert_int_equal(c1 - c0, 2);
    assert_int_equal(s1 - s0, 2);   /* alone, each caller runs its own */
    close(fd);
}

#define THREADS 8
#define ROUNDS 40
static int shared_fd;
static int bad_results;

static void *caller(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        int64_t t0 = now_ns();
        int r = fs_syncfs_shared(shared_fd);
        int64_t t1 = now_ns();
        if (r != 0 || !covered(t0, t1))
            __atomic_add_fetch(&bad_results, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void test_concurrent_callers_share(void **state)
{
    (void)state;
    shared_fd = dirfd_tmp();
    uint64_t c0, s0, c1, s1;
    fs_syncfs_stats(&c0, &s0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, caller, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    fs_syncfs_stats(&c1, &s1);
    assert_int_equal(bad_results, 0);   /* each one waited for a syncfs begun after it came */
    assert_int_equal(c1 - c0, THREADS * ROUNDS);
    /* eight callers at a time: far fewer syncfs than calls, never more */
    assert_true(s1 - s0 >= 1);
    assert_true(s1 - s0 <= (uint64_t)(THREADS * ROUNDS) / 2);
    close(shared_fd);
}

static void test_failure_is_reported(void **state)
{
    (void)state;
    int fd = dirfd_tmp();
    fail_next = 1;
    errno = 0;
    assert_int_equal(fs_syncfs_shared(fd), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(fs_syncfs_shared(fd), 0);   /* the next one is clean */
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_one_caller),
                                       cmocka_unit_test(test_concurrent_callers_share),
                                       cmocka_unit_test(test_failure_is_reported)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
