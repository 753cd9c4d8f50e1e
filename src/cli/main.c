/* keel: the command line. Dispatches to the subcommands of commands.h. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "commands_monitor.h"
#include "commands_train.h"
#include "keel.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"info", keel_cmd_info, "version, CPU features, the kernels chosen and the thread count"},
    {"check", keel_cmd_check, "every op against the float64 reference on random and adversarial inputs"},
    {"bench", keel_cmd_bench, "time and GB/s of every op beside memcpy of the same bytes"},
    {"train", keel_cmd_train, "train a small character-level GPT whose norms are keel's (needs OpenBLAS)"},
    {"sample", keel_cmd_sample, "generate text from a keel train checkpoint"},
    {"study", keel_cmd_study, "the training study: what normalization does, with plots (report folder)"},
    {"monitor", keel_cmd_monitor, "watch the norms' statistics for distribution shift: calibrate, score, eval"},
    {"threads", keel_cmd_threads, "where waking the thread pool starts to pay (for keel_ctx_set_min_parallel)"},
    {"eps", keel_cmd_eps, "what an eps means in f32/bf16/f16 storage, and an eps suited to each"},
    {"onnx-test", keel_cmd_onnx_test, "run ONNX backend node test folders (LayerNormalization, RMSNormalization)"},
};

static void usage(FILE *to)
{
    fprintf(to, "keel %s - normalization layers for transformers\n\nusage: keel COMMAND [options]\n\n",
            keel_version_string());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(to, "\n'keel COMMAND --help' describes a command's options.\n"
                "KEEL_ISA=scalar|avx2|avx512|neon forces an instruction-set path.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("keel %s\n", keel_version_string());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "keel: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
