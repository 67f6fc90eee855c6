#!/usr/bin/env python3
"""fuzz_cli.py TWINBED SOURCE_DIR [--cases N] [--seed S] [--keep] [--train]

Bad input through the whole CLI, as a user meets it: mutated experiment configs through `twinbed run`
and `twinbed sweep`, mutated topology files and flag values through `twinbed collectives`; with --train,
mutated training configs through `twinbed train` instead (a one-layer model, a few steps). Every case
must end in a result or a clear error. A case fails on
  - a signal (a crash) or an exit code of 128 and above,
  - a run that does not end within TIMEOUT_S (a hang; no case here is big: this is a detector, not a
    speed bound — the valid ones finish in well under a second),
  - library or runtime text on stderr instead of a named error ("internal error", json.exception, ...),
  - an error without a message, or a failed run whose stderr is anything but one `twinbed: error: ` line,
    last, after only the lines the CLI documents (DOCUMENTED_LINES: warnings, notes, sweep progress);
    lines are split as Python's splitlines() splits them (a U+2028 or a \x1c ends a line too),
  - a failed run that left a results file behind, or any temporary file left anywhere.
A successful run must have written a `config.json` that `twinbed run` reads back.

The mutations are drawn from a seeded generator, so the cases are the same on every run: a failure
names its case, and the case's input stays in case-<n>/ (with --keep, every case's does).
"""
import argparse
import copy
import json
import os
import random
import shutil
import subprocess
import sys

TIMEOUT_S = 300

# Text that means an exception escaped with a library's wording, or undefined behaviour was caught.
RAW_TEXT = ["internal error", "json.exception", "basic_filebuf", "basic_ios", "stoll", "stoi", "stod",
            "std::", "what():", "terminate called", "Sanitizer", "runtime error:", "Assertion", "bad_alloc"]

# What a failed run may print on stderr besides its one error line (README: run's layout warnings and
# its note on a config with a sweep; sweep's start line and one progress line per point when stderr is
# not a terminal).
DOCUMENTED_LINES = ("twinbed: warning: ", "twinbed: note: ", "twinbed: sweep of ", "sweep: ", "[")  # "[": train's progress

# Replacement values for a JSON leaf: edges of every range the parsers check, wrong types, and text
# that must not leak into a one-line error.
VALUES = [0, -1, 1, 2, 3, 7, 8, 64, 4097, 2**31, 2**53, 2**63, -2**63, 1e15, 1e308, -1e308, 5e-324,
          0.5, -0.0, 1e-9, "", "x", "x\ny", "auto", "ring", "fp8", "\u00e9\u00e8", "a" * 300, None, True,
          False, [], {}, [1, 2], {"a": 1}, [[[]]]]
# Raw text spliced in where a value was: numbers no double holds, and nesting past any sane depth.
RAW_VALUES = ["1e400", "-1e400", "NaN", "Infinity", "0x10", "01", "1.", ".5", "[" * 200 + "]" * 200,
              '{"a":' * 100 + "1" + "}" * 100, '"\\ud800"', '"\\u0000"']
# Values for CLI flags, as strings.
FLAG_VALUES = ["0", "-1", "1", "2", "3", "8", "64", "1K", "1M", "64M", "1G", "1T", "1X", "", "x", "nan", "inf",
               "1e400", "99999999999999999999", "1152921504606846976", "9223372036854775807", "4x4", "0x4",
               "2x2x2", "1e-9", "5e-324", "1e15"]
COLLECTIVE_FLAGS = {
    "--op": ["allreduce", "reducescatter", "allgather", "broadcast", "reduce", "alltoall", "x"],
    "--algo": ["ring", "tree", "rhd", "direct", "hierarchical", "auto", "native", "x"],
    "--network": ["flow", "analytical", "x"],
    "--topology": ["switch", "nvswitch-node", "fat-tree", "rail", "ring", "torus", "multi-dim", "dgx-a100",
                   "dgx-h100", "nosuch", ".", "topology.json"],
    "--device": ["a100", "h100", "h200", "x"],
    "--ranks": None, "--gpus-per-node": None, "--bandwidth-GBps": None, "--latency-us": None,
    "--intra-bandwidth-GBps": None, "--intra-latency-us": None, "--oversubscription": None, "--dims": None,
    "--min-bytes": None, "--max-bytes": None, "--factor": None, "--root": None,
}
# Sizes and rank counts a fuzz case may ask for: small enough that a valid case is quick. How fast
# twinbed is on huge clusters is the benchmarks' business, not this test's.
SMALL_FLAG_VALUES = {"--ranks": ["0", "1", "2", "3", "7", "8", "16", "-1", "1048577", "x"],
                     "--max-bytes": ["0", "1", "1K", "64M", "1X", "", "1152921504606846976", "99999999999999999999"],
                     "--dims": ["4x4", "2x2x2", "0x4", "4x", "x", "", "1x1"]}


def leaves(node, path=()):
    """Every (path, value) in a JSON document, containers included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, path + (i,))


def set_at(doc, path, value):
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def delete_at(doc, path):
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]


def mutate_json(rng, doc):
    """A mutated copy of `doc` as text: one to three structural edits, sometimes a textual one after."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 3)):
        paths = [p for p, _ in leaves(doc) if p]
        path = rng.choice(paths)
        action = rng.random()
        old = doc
        for key in path:
            old = old[key]
        if action < 0.3 and isinstance(old, (int, float)) and not isinstance(old, bool):
            set_at(doc, path, rng.choice([old * 2, old // 2, old + 1, old - 1, old * 1000, -old]))  # near the edges
        elif action < 0.6:
            set_at(doc, path, copy.deepcopy(rng.choice(VALUES)))
        elif action < 0.75:
            delete_at(doc, path)
        else:
            containers = [p for p, v in leaves(doc) if isinstance(v, dict)]
            set_at(doc, rng.choice(containers) + ("zz_unknown",), copy.deepcopy(rng.choice(VALUES)))
    text = json.dumps(doc, indent=1)
    if rng.random() < 0.2:  # a raw value no JSON encoder writes
        marker = '"__raw__"'
        paths = [p for p, v in leaves(doc) if p and not isinstance(v, (dict, list))]
        set_at(doc, rng.choice(paths), "__raw__")
        text = json.dumps(doc, indent=1).replace(marker, rng.choice(RAW_VALUES), 1)
    if rng.random() < 0.15:
        text = mutate_bytes(rng, text)
    return text


def mutate_bytes(rng, text):
    i = rng.randrange(len(text) + 1)
    choice = rng.random()
    if choice < 0.3:
        return text[:i]                                   # truncated
    if choice < 0.6:
        return text[:i] + rng.choice('{}[],:"\\\n\0 1e') + text[i:]
    if choice < 0.8:
        return text[:i] + text[i + 1:]
    j = rng.randrange(len(text) + 1)
    return text[:i] + text[min(i, j):max(i, j)] + text[i:]


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


class Fuzz:
    def __init__(self, twinbed, keep):
        self.twinbed, self.keep = twinbed, keep
        self.failures = []
        self.outcomes = {"ok": 0, "error": 0}

    def call(self, argv, cwd):
        try:
            p = subprocess.run([self.twinbed] + argv, cwd=cwd, capture_output=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"no result within {TIMEOUT_S} s (a hang)"
        err = p.stderr.decode("utf-8", "replace")
        if self.keep:
            with open(os.path.join(cwd, "stderr.txt"), "a", encoding="utf-8") as f:
                f.write(f"$ twinbed {' '.join(argv)}\nexit {p.returncode}\n{err}")
        problems = []
        if p.returncode < 0 or p.returncode >= 128:
            problems.append(f"crashed: exit {p.returncode}")
        for raw in RAW_TEXT:
            if raw in err:
                problems.append(f"raw text {raw!r} on stderr")
        if p.returncode != 0:
            lines = err.splitlines()
            errors = [line for line in lines if line.startswith("twinbed: error: ")]
            others = [line for line in lines if line not in errors and not line.startswith(DOCUMENTED_LINES)]
            if not err.strip():
                problems.append("failed without a message")
            elif len(errors) != 1 or others or lines[-1] != errors[0] or not err.endswith("\n"):
                problems.append(f"stderr is not one 'twinbed: error: ' line (after documented ones): "
                                f"{len(errors)} error lines, {len(others)} other lines")
        temporaries = [f for f in files_under(cwd) if ".tmp-" in f]
        if temporaries:
            problems.append(f"temporary files left: {temporaries}")
        return p.returncode, "; ".join(problems) + (f"\n    stderr: {err.strip()[:600]}" if problems else "")

    def record(self, case, what, argv, rc, problem, cwd):
        if problem:
            self.failures.append(f"case {case} ({what}: twinbed {' '.join(argv)}): {problem}")
        else:
            self.outcomes["ok" if rc == 0 else "error"] += 1
            if not self.keep:
                shutil.rmtree(cwd)

    def experiment(self, case, rng, seed_doc, command):
        cwd = f"case-{case}"
        os.makedirs(cwd)
        with open(os.path.join(cwd, "config.json"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(mutate_json(rng, seed_doc))
        argv = [command, "config.json", "--out", "out"] + (["--backend", "sim", "--no-trace"] if command == "run" else [])
        rc, problem = self.call(argv, cwd)
        out = os.path.join(cwd, "out")
        left = [f for f in files_under(out) if f != ".twinbed.lock"] if os.path.isdir(out) else []
        if rc is not None and not problem:
            if rc != 0 and command == "run" and left:
                problem = f"the failed run left {left} in its results folder"
            if rc != 0 and command == "sweep" and [f for f in left if f != "sweep.csv"]:
                problem = f"the failed sweep left {left} in its results folder"
            if rc == 0 and command == "run":
                rc2, problem2 = self.call(["run", "out/config.json", "--out", "again", "--no-trace"], cwd)
                if problem2 or rc2 != 0:
                    problem = f"the resolved out/config.json does not run again: {problem2 or f'exit {rc2}'}"
        self.record(case, command, argv, rc, problem, cwd)

    def train(self, case, rng, seed_doc):
        cwd = f"case-{case}"
        os.makedirs(cwd)
        with open(os.path.join(cwd, "config.json"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(mutate_json(rng, seed_doc))
        argv = ["train", "config.json", "--out", "out", "--no-plot"]
        rc, problem = self.call(argv, cwd)
        out = os.path.join(cwd, "out")
        left = [f for f in files_under(out) if f != ".twinbed.lock"] if os.path.isdir(out) else []
        if rc is not None and not problem:
            if rc != 0 and left:
                problem = f"the failed run left {left} in its results folder"
            if rc == 0:
                rc2, problem2 = self.call(["train", "out/config.json", "--out", "again", "--no-plot"], cwd)
                if problem2 or rc2 != 0:
                    problem = f"the resolved out/config.json does not train again: {problem2 or f'exit {rc2}'}"
        self.record(case, "train", argv, rc, problem, cwd)

    def collectives(self, case, rng, topology_doc):
        cwd = f"case-{case}"
        os.makedirs(cwd)
        with open(os.path.join(cwd, "topology.json"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(mutate_json(rng, topology_doc) if rng.random() < 0.5 else json.dumps(topology_doc))
        argv = ["collectives", "--max-bytes", "16M"]
        for flag in rng.sample(sorted(COLLECTIVE_FLAGS), rng.randint(1, 3)):
            choices = SMALL_FLAG_VALUES.get(flag) or COLLECTIVE_FLAGS[flag] or FLAG_VALUES
            argv += [flag, rng.choice(choices)]
        if "--topology" not in argv and rng.random() < 0.5:
            argv += ["--topology", "topology.json"]
        rc, problem = self.call(argv, cwd)
        self.record(case, "collectives", argv, rc, problem, cwd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("twinbed")
    ap.add_argument("source_dir")
    ap.add_argument("--cases", type=int, default=300, help="how many cases (default 300)")
    ap.add_argument("--seed", type=int, default=2026, help="the generator's seed (default 2026)")
    ap.add_argument("--keep", action="store_true", help="keep every case's folder, not only failing ones")
    ap.add_argument("--train", action="store_true", help="fuzz `twinbed train` with mutated training configs instead")
    args = ap.parse_args()

    def load(path):
        with open(os.path.join(args.source_dir, path), encoding="utf-8") as f:
            return json.load(f)
    runs = [load("experiments/small.json"), load("experiments/small-techniques.json")]
    sweep = load("experiments/small-sweep.json")
    sweep["sweep"] = {"/layout/pp": [1, 2], "/layout/micro_batch": [1, 2]}  # four points: quick
    topology = load("tests/data/topologies/two_hosts.json")
    training = load("tests/data/train/tiny.json")
    training["ranks"] = 1  # mpirun only where a mutation asks for ranks
    training["training"]["steps"] = 2

    fuzz = Fuzz(os.path.abspath(args.twinbed), args.keep)
    rng = random.Random(args.seed)
    for case in range(args.cases):
        kind = case % 10
        if args.train:
            fuzz.train(case, rng, training)
        elif kind < 6:
            fuzz.experiment(case, rng, runs[case % 2], "run")
        elif kind < 7:
            fuzz.experiment(case, rng, sweep, "sweep")
        else:
            fuzz.collectives(case, rng, topology)
        if (case + 1) % 50 == 0:
            print(f"{case + 1}/{args.cases} cases, {len(fuzz.failures)} failing", flush=True)

    print(f"{args.cases} cases: {fuzz.outcomes['ok']} ran, {fuzz.outcomes['error']} refused with a clear error, "
          f"{len(fuzz.failures)} failing")
    for failure in fuzz.failures:
        print("FAIL " + failure)
    return 1 if fuzz.failures else 0


if __name__ == "__main__":
    sys.exit(main())
