/* keel monitor cost (monitor_cost.c): the monitor's time per forward, summaries and per-channel
 * statistics, as a share of the forward's. */
#ifndef KEEL_MONITOR_CLI_MONITOR_COST_H
#define KEEL_MONITOR_CLI_MONITOR_COST_H

/* argv[0] is "cost"; returns the command's exit status. */
int mc_cost(int argc, char **argv);

#endif
