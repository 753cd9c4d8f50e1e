/* keel monitor faults (monitor_faults.c): weight faults injected into one sublayer at a time;
 * detection and whether the alarm names the right layer. */
#ifndef KEEL_MONITOR_CLI_MONITOR_FAULTS_H
#define KEEL_MONITOR_CLI_MONITOR_FAULTS_H

/* argv[0] is "faults"; returns the command's exit status. */
int mc_faults(int argc, char **argv);

#endif
