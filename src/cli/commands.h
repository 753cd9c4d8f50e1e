/* The keel command line: one function per subcommand, each in its own file (cmd_<name>.c).
 * argv[0] is the subcommand's name. Returns the process exit status (0 ok, 1 failure, 2 usage). */
#ifndef KEEL_CLI_COMMANDS_H
#define KEEL_CLI_COMMANDS_H

int keel_cmd_info(int argc, char **argv);
int keel_cmd_check(int argc, char **argv);
int keel_cmd_bench(int argc, char **argv);
int keel_cmd_onnx_test(int argc, char **argv);
int keel_cmd_eps(int argc, char **argv);
int keel_cmd_threads(int argc, char **argv);

#endif
