#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, tests/fuzz/corpus/<target>/ (docs/reliability.md,
"Fuzzing"). Run from the source root: python3 tests/fuzz/make_corpus.py [KEEL_BINARY]

fuzz_api: per operation a call with the common settings (a zero tail decodes to defaults), one
with a deterministic random tail, one with 0xff bytes (extreme choices); fuzz_onnx_pb: small
TensorProto and ModelProto files of tests/data/onnx and tests/data/onnx-bad, and three test
folders in the KEELDIR format; fuzz_checkpoint and fuzz_baseline: files the keel binary writes
at tiny size (a checkpoint per norm, a calibrated baseline), and the crafted files of
tests/data/monitor-bad; fuzz_cli_args: argument lists. Files that reproduce a fixed finding
are kept under names starting with "regress-" and are not rewritten here."""
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
NOPS = 17  # fuzz_api.c: OP_* count; NOPS itself selects the context setters


def target_dir(name):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if not f.startswith("regress-"):
            os.remove(os.path.join(d, f))
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def api():
    d = target_dir("fuzz_api")
    rnd = random.Random(23)
    for op in range(NOPS + 1):
        head = bytes([op, 4, 16, 0x80]) + bytes([1, 2, 3, 4])
        write(d, "op%02d-plain" % op, head + bytes(64))
        write(d, "op%02d-random" % op, head + bytes(rnd.randrange(256) for _ in range(96)))
        write(d, "op%02d-extreme" % op, bytes([op, 3, 7, 0x40]) + b"\xff" * 96)
        write(d, "op%02d-huge" % op, bytes([op, 1, 2, 0x3F]) + bytes(64))


def onnx():
    d = target_dir("fuzz_onnx_pb")
    data = os.path.join(ROOT, "tests", "data")
    picks = ["onnx/test_layer_normalization_2d_axis0", "onnx/test_rms_normalization_default_axis",
             "onnx/test_batchnorm_example"]
    for p in picks:
        base = os.path.basename(p)
        write(d, base + "-model.onnx", open(os.path.join(data, p, "model.onnx"), "rb").read())
        for f in sorted(glob.glob(os.path.join(data, p, "test_data_set_0", "*.pb"))):
            if os.path.getsize(f) <= 600:
                write(d, base + "-" + os.path.basename(f), open(f, "rb").read())
        # the whole folder: model, then tagged sections (bit 7 output, bits 0-2 K)
        blob = b"KEELDIR\n" + open(os.path.join(data, p, "model.onnx"), "rb").read()
        for f in sorted(glob.glob(os.path.join(data, p, "test_data_set_0", "*.pb"))):
            name = os.path.basename(f)
            k = int(name.split("_")[1].split(".")[0])
            tag = (0x80 if name.startswith("output") else 0) | k
            blob += b"@@KEEL@@" + bytes([tag]) + open(f, "rb").read()
        write(d, base + "-folder", blob)
    for f in sorted(glob.glob(os.path.join(data, "onnx-bad", "*", "model.onnx"))):
        write(d, "bad-" + os.path.basename(os.path.dirname(f)) + "-model.onnx", open(f, "rb").read())
    # the inputs of finding 9 (keel_pb_skip on an unclosed or mismatched group)
    write(d, "group-unclosed", b"\x0b\x08\x01")
    write(d, "group-mismatched", b"\x0b\x14")


def train_files(keel):
    tmp = tempfile.mkdtemp()
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:  # the same text as fuzz_checkpoint.c writes for --resume
        f.write("abcab cab\nthe cat\n" * 40)
    long_text = os.path.join(tmp, "long.txt")
    with open(long_text, "w") as f:
        for i in range(60):
            f.write("the cat sat on a mat, abc cab bac %d\n" % (i + 1))
    ck = target_dir("fuzz_checkpoint")
    for norm, place in [("layernorm", "pre"), ("rmsnorm", "post"), ("batchnorm", "pre"), ("dyt", "sandwich")]:
        out = os.path.join(tmp, norm + ".ckpt")
        subprocess.run([keel, "train", "--layers", "1", "--width", "8", "--heads", "2", "--seq", "8", "--batch",
                        "2", "--steps", "2", "--norm", norm, "--placement", place, "--data", text, "--save", out,
                        "--quiet", "--eval-every", "0", "--progress", "none"], check=True, stdout=subprocess.DEVNULL)
        shutil.copy(out, os.path.join(ck, norm + "-" + place + ".ckpt"))
    bl = target_dir("fuzz_baseline")
    for norm, bins in [("layernorm", "4"), ("rmsnorm", "2")]:
        out = os.path.join(tmp, norm + ".kmon")
        subprocess.run([keel, "monitor", "calibrate", "--checkpoint", os.path.join(tmp, norm + ".ckpt"), "--text",
                        long_text, "-o", out, "--window", "16", "--bins", bins], check=True,
                       stdout=subprocess.DEVNULL)
        shutil.copy(out, os.path.join(bl, norm + ".kmon"))
    for f in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "monitor-bad", "*.kmon"))):
        shutil.copy(f, os.path.join(bl, "bad-" + os.path.basename(f)))
    shutil.rmtree(tmp)


def cli():
    d = target_dir("fuzz_cli_args")
    numbers = ["0", "1", "-1", "+7", "0x10", "0X7fffffff", "2147483647", "2147483648", "-2147483648",
               "18446744073709551615", "18446744073709551616", "99999999999999999999", "1e3", "1.5", " 5", "5 ",
               "", "-", "0x", "nan", "inf", "-inf", "1e-50", "1e400", "0x1p3", "3.4028235e38", "1e-320", "-0"]
    write(d, "numbers", b"\x00" + b"\x00".join(s.encode() for s in numbers))
    train = ["--layers", "2", "--width", "64", "--heads", "4", "--eps", "-1", "--lr", "0", "--beta2", "1",
             "--seed", "18446744073709551615", "--decay", "cosine", "--norm", "rmsnorm", "--placement", "post",
             "--threads", "1025", "--untied", "--steps"]
    write(d, "train-options", bytes([0x10]) + b"\x00".join(s.encode() for s in train))
    commands = {
        0: ["--rows", "-1", "--dim", "16"], 1: ["--threads", "abc"], 2: ["--dtype", "bf16", "--eps", "1e-12"],
        3: ["--rtol", "1e-3", "--atol"], 4: ["--layers", "2", "--lr", "1e-3", "--data"],
        5: ["--checkpoint", "x.ckpt", "--tokens", "abc"], 6: ["--checkpoint", "c", "--text", "t", "--window",
                                                             "99999999999"],
        7: ["--checkpoint", "c", "--baseline", "b", "--text", "t", "--plot", "p.png"]}
    for which, args in commands.items():
        write(d, "command-%d" % which, bytes([0x18 | which]) + b"\x00".join(s.encode() for s in args))
    write(d, "command-help", bytes([0x18]) + b"--help")


if __name__ == "__main__":
    keel = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "keel")
    api()
    onnx()
    train_files(keel)
    cli()
