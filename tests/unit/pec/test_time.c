/*
 * test_time.c - the legal time of RFC 6109 §4.2 (pec_time.c): Italian time,
 * +0100 in winter and +0200 in summer, across both changes of offset,
 * whatever the process's TZ (ctest runs this with TZ=America/New_York), and
 * the zone [pec] timezone names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pec/pec.h"

static const struct {
    time_t utc;
    const char *giorno, *ora, *zona;
} rows[] = {
    /* winter and summer */
    {.utc = 1768478400, .giorno = "15/01/2026", .ora = "13:00:00", .zona = "+0100"},
    {.utc = 1784116800, .giorno = "15/07/2026", .ora = "14:00:00", .zona = "+0200"},
    /* the change of 29 March 2026 at 01:00 UTC: 02:00 +0100 becomes 03:00 +0200 */
    {.utc = 1774745999, .giorno = "29/03/2026", .ora = "01:59:59", .zona = "+0100"},
    {.utc = 1774746000, .giorno = "29/03/2026", .ora = "03:00:00", .zona = "+0200"},
    /* and back on 25 October 2026 at 01:00 UTC: 03:00 +0200 becomes 02:00 +0100 */
    {.utc = 1792889999, .giorno = "25/10/2026", .ora = "02:59:59", .zona = "+0200"},
    {.utc = 1792890000, .giorno = "25/10/2026", .ora = "02:00:00", .zona = "+0100"},
    /* a new year that starts earlier in Italy than in UTC */
    {.utc = 1798758000, .giorno = "01/01/2027", .ora = "00:00:00", .zona = "+0100"},
};

static void test_legal_time_whatever_tz(void **state)
{
    (void)state;
    setenv("TZ", "Pacific/Auckland", 1);   /* and changed while running: no effect */
    tzset();
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pec_daticert d;
        memset(&d, 0, sizeof d);
        pec_daticert_set_time(&d, rows[i].utc);
        if (strcmp(d.giorno, rows[i].giorno) != 0 || strcmp(d.ora, rows[i].ora) != 0 ||
            strcmp(d.zona, rows[i].zona) != 0)
            fail_msg("row %zu: %s %s %s, want %s %s %s", i, d.giorno, d.ora, d.zona,
                     rows[i].giorno, rows[i].ora, rows[i].zona);
        struct tm tm;
        pec_legal_time(rows[i].utc, &tm);
        assert_int_equal(tm.tm_gmtoff, rows[i].zona[2] == '2' ? 7200 : 3600);
    }
    struct tm tm;
    pec_legal_time(1768478400, &tm);   /* Thursday 15 January 2026 */
    assert_int_equal(tm.tm_wday, 4);
    assert_int_equal(tm.tm_yday, 14);
    assert_int_equal(tm.tm_isdst, 0);
}

static void test_configured_zone(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(pec_set_timezone("Asia/Tokyo", err, sizeof err), 0);
    pec_daticert d;
    memset(&d, 0, sizeof d);
    pec_daticert_set_time(&d, 1768478400);
    assert_string_equal(d.zona, "+0900");
    assert_string_equal(d.ora, "21:00:00");
    assert_int_equal(pec_set_timezone("Europa/Roma", err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown time zone 'Europa/Roma'"));
    pec_daticert_set_time(&d, 1768478400);   /* a bad name changes nothing */
    assert_string_equal(d.zona, "+0900");
    assert_int_equal(pec_set_timezone(NULL, err, sizeof err), 0);   /* the default */
    pec_daticert_set_time(&d, 1768478400);
    assert_string_equal(d.zona, "+0100");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legal_time_whatever_tz),
        cmocka_unit_test(test_configured_zone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
