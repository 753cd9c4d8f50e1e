/* keel monitor eval (monitor_eval.c): does the monitor detect distribution shift, against the
 * other detectors of the same forward pass (the per-channel Mahalanobis distance, the NLL, the
 * output's entropy and max probability), at one false-alarm rate, on one or more checkpoints?
 * The tables, CSVs and plots in a folder (docs/monitor; scripts/monitor-report.sh). */
#ifndef KEEL_MONITOR_CLI_MONITOR_EVAL_H
#define KEEL_MONITOR_CLI_MONITOR_EVAL_H

/* argv[0] is "eval"; returns the command's exit status. */
int mc_eval(int argc, char **argv);

#endif
