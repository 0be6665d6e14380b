/*
 * flags.h: a command line as a table of flags, for c/gpt (run.c) and c/gpt-server (server.c).
 *
 *     long steps = 256;
 *     const Flag flags[] = {{"-n", FLAG_INT, &steps, 0, 1e8, "N", "tokens to generate (default 256)"}};
 *     const char *model = NULL;
 *     int rc = flags_parse(flags, 1, argc, argv, &model, "usage: gpt MODEL.bin [options]");
 *     if (rc) return rc < 0;  // 1: --help was printed; -1: one error line was printed
 */
#ifndef FLAGS_H
#define FLAGS_H

#include <stdio.h>

typedef enum {
    FLAG_INT,     // value: long *, between lo and hi
    FLAG_FLOAT,   // value: float *, between lo and hi
    FLAG_TEXT,    // value: const char ** (argv's own string)
    FLAG_SWITCH,  // value: int *, set to 1; takes no argument
} FlagKind;

typedef struct {
    const char *name;   // "--port", "-n"
    FlagKind kind;
    void *value;
    double lo, hi;
    const char *arg;    // the value's name in the usage ("N"), NULL for a switch
    const char *help;   // one line or several ('\n'), indented under the flag in the usage
} Flag;

/* Parses argv[1..argc) into the flags' values and the one positional argument (*positional stays NULL without one).
   0 when parsed; 1 after printing the usage to stdout (-h, --help); -1 after printing one "error: ..." line. */
int flags_parse(const Flag *flags, int n_flags, int argc, char **argv, const char **positional, const char *usage_head);
void flags_usage(FILE *f, const char *usage_head, const Flag *flags, int n_flags);

#endif
