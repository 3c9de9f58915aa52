#!/usr/bin/env python3
"""Code Interpreter benchmark: StartCodeInterpreterSession → first executeCode result, cold
(no warm pool) and claimed from the warm pool, per tier; the round trip of `print(1)` against
the same statement in an already running local Python; 100 MB upload (writeFiles) and
download (readFiles) throughput. Drives a real `berth serve` (release build) with boto3;
prints Markdown for docs/PERFORMANCE.md.

    python tools/bench_interpreter.py --berth target/release/berth [--starts N]
"""

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "conformance"))
SYSTEM = "aws.codeinterpreter.v1"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def results(response):
    return [event["result"] for event in response["stream"]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--starts", type=int, default=20, help="session starts per tier and mode")
    parser.add_argument("--calls", type=int, default=300, help="print(1) round trips")
    args = parser.parse_args()
    os.environ["BERTH_TEST_BINARY"] = args.berth
    os.environ.setdefault("BERTH_TEST_INTERPRETER_DIR", os.path.expanduser("~/.cache/berth/interpreter"))
    import conftest  # the conformance suite's server fixture: a real `berth serve`
    import boto3

    conftest.INTERPRETER = os.environ["BERTH_TEST_INTERPRETER_DIR"]
    tiers = ["namespace"] + (["gvisor"] if shutil.which("runsc") else [])
    print("## Code Interpreter: StartCodeInterpreterSession → first executeCode result\n")
    print("| tier | start | sessions | p50 ms | p95 ms |")
    print("|---|---|---:|---:|---:|")
    for tier in tiers:
        for mode, pool in (("cold", 0), ("warm pool", 2)):
            server = conftest.Server("sqlite", config=f'[interpreter]\nisolation = "{tier}"\nwarm_pool = {pool}\n')
            try:
                os.environ.update(server.environ())
                dp = boto3.Session().client("bedrock-agentcore")
                times = []
                for _ in range(args.starts):
                    time.sleep(0.5 if pool else 0.05)  # let the pool refill, as between real users
                    started = time.perf_counter()
                    sid = dp.start_code_interpreter_session(codeInterpreterIdentifier=SYSTEM)["sessionId"]
                    out = results(dp.invoke_code_interpreter(codeInterpreterIdentifier=SYSTEM, sessionId=sid,
                                                             name="executeCode", arguments={"code": "print(1)"}))
                    times.append((time.perf_counter() - started) * 1000)
                    assert out[0]["structuredContent"]["stdout"] == "1\n", out
                    dp.stop_code_interpreter_session(codeInterpreterIdentifier=SYSTEM, sessionId=sid)
                print(f"| {tier} | {mode} | {len(times)} | {percentile(times, .5):.0f} | {percentile(times, .95):.0f} |")
            finally:
                server.stop()

    server = conftest.Server("sqlite")
    try:
        os.environ.update(server.environ())
        dp = boto3.Session().client("bedrock-agentcore")
        sid = dp.start_code_interpreter_session(codeInterpreterIdentifier=SYSTEM)["sessionId"]

        def invoke(name, arguments):
            return results(dp.invoke_code_interpreter(codeInterpreterIdentifier=SYSTEM, sessionId=sid,
                                                      name=name, arguments=arguments))

        trips = []
        for _ in range(args.calls):
            started = time.perf_counter()
            invoke("executeCode", {"code": "print(1)"})
            trips.append((time.perf_counter() - started) * 1000)
        namespace = {}
        code = compile("print(1)", "<cell>", "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            local = min(timeit.repeat(lambda: exec(code, namespace), number=1000, repeat=5)) / 1000 * 1000
        print("\n## Code Interpreter: executeCode `print(1)` round trip (namespace tier, boto3 client)\n")
        print("| path | p50 ms | p95 ms |")
        print("|---|---:|---:|")
        print(f"| InvokeCodeInterpreter executeCode | {percentile(trips, .5):.2f} | {percentile(trips, .95):.2f} |")
        print(f"| `exec` in an already running local Python | {local:.4f} | — |")
        print(f"\nRatio (p50): {percentile(trips, .5) / local:,.0f}×\n")

        blob = os.urandom(100 * 1000 * 1000)
        started = time.perf_counter()
        written = invoke("writeFiles", {"content": [{"path": "big.bin", "blob": blob}]})
        upload = time.perf_counter() - started
        assert not written[0]["isError"], written
        # readFiles returns one file per event (botocore caps an event at 24 MiB): 100 MB as 7 files.
        part = 100 * 1000 * 1000 // 7
        invoke("executeCommand", {"command": f"split -b {part} -d big.bin part."})
        parts = [f"part.{i:02d}" for i in range(-(-len(blob) // part))]
        started = time.perf_counter()
        files = invoke("readFiles", {"paths": parts})
        download = time.perf_counter() - started
        size = sum(len(f["content"][0]["resource"].get("blob", b"")) for f in files if not f["isError"])
        assert size == len(blob), size
        print("## Code Interpreter: 100 MB through writeFiles / readFiles (namespace tier, boto3)\n")
        print("| direction | seconds | MB/s |")
        print("|---|---:|---:|")
        print(f"| upload (one writeFiles, base64 in JSON) | {upload:.2f} | {100 / upload:.0f} |")
        print(f"| download (one readFiles, one event per part) | {download:.2f} | {100 / download:.0f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
