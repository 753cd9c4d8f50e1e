/* keel train: command-line options of the trainer (shared by train and study). */
#ifndef KEEL_TRAIN_OPTIONS_H
#define KEEL_TRAIN_OPTIONS_H

#include <stdio.h>

#include "trainer.h"

/* Parses argv[*i] (and its value) into o when it is a trainer option. Returns 1 if consumed,
 * 0 if not a trainer option, -1 on a bad value (message printed). data_path receives --data. */
int tr_parse_option(tr_opts *o, int argc, char **argv, int *i, const char **data_path);
void tr_print_options(FILE *to);
/* The message for a build without CBLAS; returns 1 (and prints) when the build lacks it. */
int tr_no_cblas(const char *cmd);

#endif
