/*  crm_test.h - the suite's minimal unit-test harness: checks, a summary line, an exit code. */
#ifndef CRM_TEST_H_INCLUDED
#define CRM_TEST_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int crm_test_passed = 0;
static int crm_test_failed = 0;

//  Records one check; on failure prints where and what.
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond)                                                                                  \
            crm_test_passed++;                                                                     \
        else {                                                                                     \
            crm_test_failed++;                                                                     \
            fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        if (check_a_ && check_b_ && strcmp (check_a_, check_b_) == 0)                              \
            crm_test_passed++;                                                                     \
        else {                                                                                     \
            crm_test_failed++;                                                                     \
            fprintf (stderr, "%s:%d: check failed: %s == %s (\"%s\" vs \"%s\")\n", __FILE__,       \
                     __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                             \
                     check_b_ ? check_b_ : "(null)");                                              \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long check_a_ = (long long) (a), check_b_ = (long long) (b);                          \
        if (check_a_ == check_b_)                                                                  \
            crm_test_passed++;                                                                     \
        else {                                                                                     \
            crm_test_failed++;                                                                     \
            fprintf (stderr, "%s:%d: check failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, \
                     #a, #b, check_a_, check_b_);                                                  \
        }                                                                                          \
    } while (0)

//  Runs one test function, naming it on stderr.
#define RUN(test_fn)                                                                               \
    do {                                                                                           \
        fprintf (stderr, "  %s\n", #test_fn);                                                      \
        test_fn ();                                                                                \
    } while (0)

//  What file holds up to where it was written, as a string; the file is left
//  at its end, to be written on. Caller frees.
static inline char *
crm_test_file_text (FILE *file)
{
    fflush (file);
    long size = ftell (file);
    char *text = calloc (1, (size_t) size + 1);
    rewind (file);
    size_t got = fread (text, 1, (size_t) size, file);
    text[got] = '\0';
    fseek (file, 0, SEEK_END);
    return text;
}

//  Prints the closing line "<name>: N passed, N failed" and gives the exit code.
#define TEST_DONE(name)                                                                            \
    (printf ("%s: %d passed, %d failed\n", (name), crm_test_passed, crm_test_failed),              \
     crm_test_failed ? EXIT_FAILURE : EXIT_SUCCESS)

#endif
