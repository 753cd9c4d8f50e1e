/* keel monitor eval (monitor_eval.c): does the monitor detect distribution shift, against the
 * model's own log-likelihood? The report, CSVs and plots in a folder (docs/monitor.md). */
#ifndef KEEL_MONITOR_CLI_MONITOR_EVAL_H
#define KEEL_MONITOR_CLI_MONITOR_EVAL_H

/* argv[0] is "eval"; returns the command's exit status. */
int mc_eval(int argc, char **argv);

#endif
