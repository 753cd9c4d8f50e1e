/* keel train: the subcommands `keel train`, `keel sample` and `keel study` (argv[0] is the
 * subcommand's name). Return the exit status: 0 ok, 1 failure, 2 usage. */
#ifndef KEEL_TRAIN_COMMANDS_H
#define KEEL_TRAIN_COMMANDS_H

int keel_cmd_train(int argc, char **argv);
int keel_cmd_sample(int argc, char **argv);
int keel_cmd_study(int argc, char **argv);

#endif
