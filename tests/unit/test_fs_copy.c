/* fs_copy_tree and fs_remove_tree (src/lib/fs_copy.c) below a directory
 * someone else writes to: links and FIFOs inside the tree are skipped and
 * counted by a copy, unlinked (their targets kept) by a removal; and with a
 * thread swapping a directory of the tree for a symbolic link to another
 * directory and back (renameat2 RENAME_EXCHANGE) while they run, neither a
 * copy nor a removal ever reaches the link's target; nor does fs_give_tree
 * (root giving a tree away) change the owner of anything outside it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* renameat2 */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SWAP_RUNS 4000          /* walks under a swapping thread, at most */
#define SWAP_SECONDS 8          /* and at most this long */

static char base[PATH_MAX];

static void put(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(fs_write_atomic(p, text, strlen(text), 0600), 0);
}

static void mkd(const char *p)
{
    assert_true(mkdir(p, 0700) == 0 || errno == EEXIST);
}

/* true if a file under top holds needle */
static bool tree_holds(const char *top, const char *needle)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "grep -rqs -- '%s' '%s'", needle, top);
    return system(cmd) == 0;
}

/* how many of the outside files f0..f7 are in dir */
static int count_files(const char *dir)
{
    int n = 0;
    for (int i = 0; i < 8; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/f%d", dir, i);
        n += access(p, F_OK) == 0;
    }
    return n;
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(fs_mkdirs(TEST_TMPDIR, 0700), 0);
    snprintf(base, sizeof base, "%s", TEST_TMPDIR);
    return 0;
}

static void links_and_fifos_are_skipped_and_counted(void **state)
{
    (void)state;
    char tree[PATH_MAX], out[PATH_MAX], dst[PATH_MAX], p[PATH_MAX];
    snprintf(tree, sizeof tree, "%s/static-tree", base);
    snprintf(out, sizeof out, "%s/static-outside", base);
    snprintf(dst, sizeof dst, "%s/static-copy", base);
    mkd(tree);
    mkd(out);
    snprintf(p, sizeof p, "%s/sub", tree);
    mkd(p);
    put(out, "secret", "SECRET-OUTSIDE");
    put(tree, "a", "inside a");
    put(p, "b", "inside b");
    snprintf(p, sizeof p, "%s/sub/dir-link", tree);
    assert_int_equal(symlink(out, p), 0);
    snprintf(p, sizeof p, "%s/file-link", tree);
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s/secret", out);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof p, "%s/fifo", tree);
    assert_int_equal(mkfifo(p, 0600), 0);

    struct fs_copy_stats st = {0};
    char err[512] = "";
    assert_int_equal(fs_copy_tree(tree, dst, NULL, &st, err, sizeof err), 0);
    assert_int_equal(st.files, 2);
    assert_int_equal(st.skipped, 3);
    assert_false(tree_holds(dst, "SECRET-OUTSIDE"));
    assert_true(tree_holds(dst, "inside b"));

    /* a removal unlinks the links, keeps what they point at */
    assert_int_equal(fs_remove_tree(tree), 0);
    assert_int_equal(access(tree, F_OK), -1);
    assert_true(tree_holds(out, "SECRET-OUTSIDE"));
    assert_int_equal(fs_remove_tree(dst), 0);
    /* absent: not an error */
    assert_int_equal(fs_remove_tree(dst), 0);
}

/* ---- a directory of the tree swapped for a link while the walk runs ------- */

struct swapper {
    char a[PATH_MAX], b[PATH_MAX];  /* exchanged again and again */
    atomic_bool stop;
    unsigned long swaps;
};

static void *swap_main(void *arg)
{
    struct swapper *s = arg;
    while (!atomic_load(&s->stop)) {
        if (renameat2(AT_FDCWD, s->a, AT_FDCWD, s->b, RENAME_EXCHANGE) == 0)
            s->swaps++;
        else
            sched_yield();   /* one side is missing (removed): the test puts it back */
    }
    return NULL;
}

/* tree/d is a directory (file f: "INSIDE") or a link to out (file f and
 * others: SECRET); the other one waits in hidden/d. */
static void arm(const char *tree, const char *hidden, const char *out)
{
    char d[PATH_MAX], h[PATH_MAX], p[PATH_MAX];
    mkd(tree);
    snprintf(d, sizeof d, "%s/d", tree);
    snprintf(h, sizeof h, "%s/d", hidden);
    struct stat sd, sh;
    bool has_d = lstat(d, &sd) == 0, has_h = lstat(h, &sh) == 0;
    if (has_d && has_h)
        return;
    /* which one is missing: the removal took it */
    bool link_left = (has_d && S_ISLNK(sd.st_mode)) || (has_h && S_ISLNK(sh.st_mode));
    bool dir_left = (has_d && S_ISDIR(sd.st_mode)) || (has_h && S_ISDIR(sh.st_mode));
    const char *free_slot = has_d ? h : d;
    if (!has_d && !has_h) {
        assert_int_equal(symlink(out, h), 0);
        link_left = true;
    }
    if (!dir_left) {
        /* made aside, then moved in: the swapper starts as soon as both exist */
        snprintf(p, sizeof p, "%s.new", hidden);
        mkd(p);
        put(p, "f", "INSIDE");
        assert_int_equal(rename(p, link_left ? free_slot : d), 0);
    } else if (!link_left) {
        assert_int_equal(symlink(out, free_slot), 0);
    }
}

static void outside(const char *out)
{
    mkd(out);
    for (int i = 0; i < 8; i++) {
        char n[16];
        snprintf(n, sizeof n, "f%d", i);
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", out, n);
        if (access(p, F_OK) == -1)
            put(out, n, "SECRET-OUTSIDE");
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A tree whose directory d a thread keeps swapping with a link to a
 * directory outside it (files SECRET-OUTSIDE), under base/race-NAME-*. */
struct race {
    char tree[PATH_MAX], hidden[PATH_MAX], out[PATH_MAX];
    struct swapper s;
    pthread_t th;
};

static void race_start(struct race *r, const char *name)
{
    snprintf(r->tree, sizeof r->tree, "%s/race-%s-tree", base, name);
    snprintf(r->hidden, sizeof r->hidden, "%s/race-%s-hidden", base, name);
    snprintf(r->out, sizeof r->out, "%s/race-%s-outside", base, name);
    mkd(r->hidden);
    outside(r->out);
    arm(r->tree, r->hidden, r->out);
    r->s.swaps = 0;
    snprintf(r->s.a, sizeof r->s.a, "%s/d", r->tree);
    snprintf(r->s.b, sizeof r->s.b, "%s/d", r->hidden);
    atomic_init(&r->s.stop, false);
    assert_int_equal(pthread_create(&r->th, NULL, swap_main, &r->s), 0);
}

static void race_stop(struct race *r)
{
    atomic_store(&r->s.stop, true);
    pthread_join(r->th, NULL);
}

static void a_copy_never_follows_a_link_swapped_in(void **state)
{
    (void)state;
    struct race r;
    race_start(&r, "copy");
    const char *tree = r.tree;
    char dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%s/race-copy-dst", base);
    double t0 = now_s();
    int runs = 0, leaked = 0, copied_inside = 0;
    for (; runs < SWAP_RUNS && now_s() - t0 < SWAP_SECONDS && leaked == 0; runs++) {
        struct fs_copy_stats st = {0};
        char err[512];
        fs_remove_tree(dst);
        fs_copy_tree(tree, dst, NULL, &st, err, sizeof err);   /* may fail: a dir vanished */
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/d", dst);
        if (count_files(p) > 0)
            leaked++;          /* the outside directory's files, copied */
        snprintf(p, sizeof p, "%s/d/f", dst);
        copied_inside += access(p, F_OK) == 0;
    }
    race_stop(&r);
    print_message("copy: %d walks, %lu swaps, %d copied the directory\n", runs, r.s.swaps,
                  copied_inside);
    assert_int_equal(leaked, 0);
    assert_true(r.s.swaps > 0);
}

static void a_removal_never_follows_a_link_swapped_in(void **state)
{
    (void)state;
    struct race r;
    race_start(&r, "rm");
    const char *tree = r.tree, *hidden = r.hidden, *out = r.out;
    double t0 = now_s();
    int runs = 0, lost = 0;
    for (; runs < SWAP_RUNS && now_s() - t0 < SWAP_SECONDS && lost == 0; runs++) {
        arm(tree, hidden, out);
        fs_remove_tree(tree);          /* may fail: the directory became a link meanwhile */
        if (count_files(out) != 8)
            lost++;
    }
    race_stop(&r);
    print_message("removal: %d walks, %lu swaps\n", runs, r.s.swaps);
    assert_int_equal(lost, 0);
    assert_true(r.s.swaps > 0);
}

/* fs_give_tree as root (pecd's start, src/cmd/pecd_privsep.c): what root
 * owns in the tree goes to nobody, while a thread swaps a directory of the
 * tree for a link to a root-owned directory outside it and back; the files
 * outside stay root's. */
static void a_give_never_follows_a_link_swapped_in(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    const uid_t nobody = 65534;
    struct race r;
    race_start(&r, "give");
    const char *tree = r.tree, *hidden = r.hidden, *out = r.out;
    double t0 = now_s();
    int runs = 0, leaked = 0, given_inside = 0;
    for (; runs < SWAP_RUNS && now_s() - t0 < SWAP_SECONDS && leaked == 0; runs++) {
        fs_give_tree(tree, 0, nobody, nobody);
        for (int i = 0; i < 8; i++) {
            char p[PATH_MAX];
            struct stat st;
            snprintf(p, sizeof p, "%s/f%d", out, i);
            if (lstat(p, &st) == 0 && st.st_uid != 0)
                leaked++;
        }
        char p[PATH_MAX];
        struct stat st;
        snprintf(p, sizeof p, "%s/d/f", tree);
        given_inside += lstat(p, &st) == 0 && st.st_uid == nobody;
        fs_give_tree(tree, nobody, 0, 0);          /* back to root for the next walk */
        fs_give_tree(hidden, nobody, 0, 0);
    }
    race_stop(&r);
    print_message("give: %d walks, %lu swaps, %d gave the directory's file\n", runs, r.s.swaps,
                  given_inside);
    assert_int_equal(leaked, 0);
    assert_true(r.s.swaps > 0);
    assert_true(given_inside > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(links_and_fifos_are_skipped_and_counted),
        cmocka_unit_test(a_copy_never_follows_a_link_swapped_in),
        cmocka_unit_test(a_removal_never_follows_a_link_swapped_in),
        cmocka_unit_test(a_give_never_follows_a_link_swapped_in),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
