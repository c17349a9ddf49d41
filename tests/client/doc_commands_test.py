#!/usr/bin/env python3
"""Every `qat ...` command written in the docs parses with today's CLI.

Issue #17: "a newcomer can copy every command of the README and client/README and it works".
The commands need a daemon, models and datasets to run, which the e2e tests provide; what rots
silently in docs is the command line itself (a flag renamed, a subcommand moved, a required flag
added). This test takes every `qat` command from the Markdown files (``$ qat ...`` and plain
``qat ...`` lines in code blocks, with ``\\`` continuations), replaces placeholders such as
``<job id>`` or ``<cache>``, and runs it against an address where no daemon listens: a command
whose flags parse gets as far as connecting and exits 3 ("cannot reach qatd"), or exits 0 when it
needs no daemon (``--help``). Exit 2 (a usage error) fails the test, naming the file and line.
Commands the docs show failing on purpose (a comment saying ``exit N``) are skipped.

Usage: doc_commands_test.py --qat BUILD/client/qat --root SOURCE_DIR
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

DOCS = ["README.md", "client/README.md", "docs/DESIGN.md", "docs/export-anemll.md", "deploy/README.md"]
UNREACHABLE = "127.0.0.1:1"


def commands(path):
    """(line number, command text) of every qat command in the Markdown file's code blocks."""
    out, in_block, pending, start = [], False, None, 0
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.lstrip().startswith("```"):
                in_block, pending = not in_block, None
                continue
            if not in_block:
                continue
            if pending is not None:
                pending += " " + line.strip()
            else:
                m = re.match(r"^\s*(?:\$\s+)?(qat\s.*)$", line)
                if not m:
                    continue
                pending, start = m.group(1), n
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            out.append((start, pending))
            pending = None
    return out


def prepare(text):
    """The command as argv, or None when the docs show it failing on purpose."""
    code, _, comment = text.partition("#")
    if re.search(r"\bexit [1-9]", comment):
        return None
    code = re.sub(r"<(?:job )?id>|\bID\b", "1", code)
    code = re.sub(r"<data-dir>", "/nonexistent/data", code)
    code = re.sub(r"<[^>]+>", "/nonexistent/placeholder", code)
    code = re.split(r"\s*(?:\||;|&&|>)\s", code)[0]
    argv = shlex.split(code)[1:]
    if argv and not re.match(r"^-{0,2}[a-z]", argv[0]):
        return None  # prose or a diagram in a code block ("qat (client/) ..."), not a command
    return argv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qat", required=True)
    ap.add_argument("--root", required=True)
    args = ap.parse_args()
    env = dict(os.environ, QATD_ADDRESS=UNREACHABLE, NO_COLOR="1")
    env.pop("QATD_TOKEN", None)
    checked, failures = 0, []
    for doc in DOCS:
        path = os.path.join(args.root, doc)
        if not os.path.exists(path):
            continue
        for line, text in commands(path):
            argv = prepare(text)
            if argv is None:
                continue
            # `--address` in the docs points at the docs' daemon; aim every command at no daemon.
            if "--address" in argv:
                i = argv.index("--address")
                argv[i + 1] = UNREACHABLE
            try:
                p = subprocess.run([args.qat] + argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, timeout=30)
            except subprocess.TimeoutExpired:
                failures.append(f"{doc}:{line}: `{text}` did not end in 30 s")
                continue
            checked += 1
            if p.returncode not in (0, 3):
                msg = (p.stderr or p.stdout).strip().splitlines()
                failures.append(f"{doc}:{line}: `{text}` exited {p.returncode}: {msg[0] if msg else ''}")
    print(f"{checked} documented qat commands checked")
    for f in failures:
        print("FAIL", f)
    if checked < 20:
        print(f"FAIL only {checked} commands found: is the extraction broken?")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
