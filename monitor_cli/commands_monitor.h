/* keel monitor (issue 8): `keel monitor calibrate|score|eval` (argv[0] is "monitor"). */
#ifndef KEEL_MONITOR_CLI_COMMANDS_MONITOR_H
#define KEEL_MONITOR_CLI_COMMANDS_MONITOR_H

int keel_cmd_monitor(int argc, char **argv);

#endif
