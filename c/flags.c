/*
 * flags.c: see flags.h. Every value is checked against its range before it is used; every problem is one line.
 */
#include "flags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void flags_usage(FILE *f, const char *usage_head, const Flag *flags, int n_flags) {
    fprintf(f, "%s\n", usage_head);
    for (int i = 0; i < n_flags; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", flags[i].name, flags[i].arg ? " " : "", flags[i].arg ? flags[i].arg : "");
        fprintf(f, "  %-20s ", left);
        for (const char *p = flags[i].help; *p; p++) {
            fputc(*p, f);
            if (*p == '\n') fprintf(f, "  %-20s ", "");
        }
        fputc('\n', f);
    }
}

// One flag's value from its text; 0, or -1 after the error line.
static int set_value(const Flag *flag, const char *text) {
    char *end;
    errno = 0;
    if (flag->kind == FLAG_TEXT) {
        *(const char **)flag->value = text;
    } else if (flag->kind == FLAG_INT) {
        long v = strtol(text, &end, 10);
        if (errno || end == text || *end || (double)v < flag->lo || (double)v > flag->hi) {
            fprintf(stderr, "error: %s needs an integer between %.0f and %.0f, got '%s'\n", flag->name, flag->lo, flag->hi, text);
            return -1;
        }
        *(long *)flag->value = v;
    } else {
        float v = strtof(text, &end);
        if (errno || end == text || *end || !(v >= (float)flag->lo && v <= (float)flag->hi)) {  // as floats: 1e-6 is 1e-6f
            fprintf(stderr, "error: %s needs a number between %g and %g, got '%s'\n", flag->name, flag->lo, flag->hi, text);
            return -1;
        }
        *(float *)flag->value = v;
    }
    return 0;
}

int flags_parse(const Flag *flags, int n_flags, int argc, char **argv, const char **positional, const char *usage_head) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            flags_usage(stdout, usage_head, flags, n_flags);
            return 1;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (*positional) {
                fprintf(stderr, "error: one model file only, got %s and %s (quote a prompt: -p \"...\")\n", *positional, a);
                return -1;
            }
            *positional = a;
            continue;
        }
        const Flag *flag = NULL;
        for (int k = 0; k < n_flags && !flag; k++)
            if (!strcmp(a, flags[k].name)) flag = &flags[k];
        if (!flag) {
            fprintf(stderr, "error: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (flag->kind == FLAG_SWITCH) {
            *(int *)flag->value = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value (%s)\n", a, flag->arg);
            return -1;
        }
        if (set_value(flag, argv[++i]) != 0) return -1;
    }
    return 0;
}
