#!/usr/bin/env python3
"""Runs a command (`cargo test ...`) and stops it the moment one test hangs.

    .ci/watchdog.py [--per-test SECONDS] [--silence SECONDS] [--total SECONDS] -- COMMAND...

libtest prints `test NAME has been running for over 60 seconds` for a slow test. From that line
on the watchdog counts that test's time; once a test has run for more than --per-test seconds
(without its `test NAME ... ok|FAILED|ignored` line), or nothing at all was printed for
--silence seconds, or the whole command ran for --total seconds, it names the test binary and the
tests still running, kills the command's whole process group (test binaries and everything they
started) and exits with 124. Otherwise it exits with the command's own status. Output passes
through unchanged, so the runner's closing lines are still read.
"""

import argparse
import os
import re
import selectors
import signal
import subprocess
import sys
import time

SLOW = re.compile(r"^test (.+) has been running for over (\d+) seconds$")
DONE = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored.*)$")
BINARY = re.compile(r"^\s*(Running|Doc-tests) (.+)$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-test", type=float, default=420, help="seconds one test may run (default 420)")
    parser.add_argument("--silence", type=float, default=900, help="seconds without any output (default 900)")
    parser.add_argument("--total", type=float, default=75 * 60, help="seconds for the whole command (default 4500)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, bufsize=0
    )
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    running = {}  # test name -> when it started (monotonic)
    binary = "(building)"
    last_output = time.monotonic()
    pending = b""

    def give_up(why: str) -> int:
        print(f"\n::watchdog: {why}", flush=True)
        print(f"::watchdog: in {binary}", flush=True)
        for name, since in sorted(running.items(), key=lambda kv: kv[1]):
            print(f"::watchdog: still running: {name} ({time.monotonic() - since:.0f} s)", flush=True)
        print("::watchdog: killing the run (its process group)", flush=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return 124

    while True:
        events = selector.select(timeout=5)
        now = time.monotonic()
        for _key, _mask in events:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                selector.unregister(proc.stdout)
                pending += b"\n"
                break
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            last_output = now
            pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if m := BINARY.match(line):
                binary = m.group(2)
                running.clear()
            elif m := SLOW.match(line):
                running.setdefault(m.group(1), now - float(m.group(2)))
            elif m := DONE.match(line):
                running.pop(m.group(1), None)
        if not selector.get_map():
            return proc.wait()
        for name, since in running.items():
            if now - since > args.per_test:
                return give_up(f"test {name} ran for over {args.per_test:.0f} s (--per-test)")
        if now - last_output > args.silence:
            return give_up(f"nothing was printed for {args.silence:.0f} s (--silence)")
        if now - started > args.total:
            return give_up(f"the command ran for over {args.total:.0f} s (--total)")


if __name__ == "__main__":
    sys.exit(main())
