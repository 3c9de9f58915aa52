#!/usr/bin/env python3
"""Runtime benchmark: session cold start to an answering Python agent per tier, the overhead
InvokeAgentRuntime adds over calling the same agent directly, idle sessions per GiB, and the
throughput of a 100 MB payload. Drives a real `berth serve` (release build) with boto3 and raw
HTTP; prints Markdown for docs/PERFORMANCE.md.

    python tools/bench_runtime.py --berth target/release/berth [--cold N] [--idle N]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "conformance"))
AGENT = os.path.join(HERE, "..", "tests", "conformance", "agents", "basic")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--cold", type=int, default=10, help="cold starts per tier")
    parser.add_argument("--warm", type=int, default=300, help="warm invocations for the overhead")
    parser.add_argument("--idle", type=int, default=20, help="idle sessions for the density figure")
    args = parser.parse_args()
    os.environ["BERTH_TEST_BINARY"] = args.berth
    import conftest  # the conformance suite's server fixture: a real `berth serve`
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    server = conftest.Server("sqlite")
    try:
        os.environ.update(server.environ())
        cp, dp = boto3.client("bedrock-agentcore-control"), boto3.client("bedrock-agentcore")
        name = "bench_" + uuid.uuid4().hex[:6]
        deployed = json.loads(subprocess.run(
            [args.berth, "deploy", AGENT, "--name", name, "--data-dir", server.data_dir,
             "--listen", f"127.0.0.1:{server.port}"], check=True, capture_output=True, text=True).stdout)
        arn = deployed["agentRuntimeArn"]

        def invoke(payload, sid):
            response = dp.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=sid, payload=payload)
            return response["response"].read()

        print("## Runtime session cold start (new session → first answer from a BedrockAgentCoreApp agent)\n")
        print("| tier | sessions | p50 ms | p95 ms |")
        print("|---|---:|---:|---:|")
        tiers = ["namespace"] + (["gvisor"] if os.path.exists("/usr/bin/runsc") else [])
        for tier in tiers:
            cp.tag_resource(resourceArn=arn, tags={"berth:isolation": tier})
            times = []
            for _ in range(args.cold):
                sid = "bench-cold-" + uuid.uuid4().hex
                started = time.perf_counter()
                invoke(b'{"op": "count"}', sid)
                times.append((time.perf_counter() - started) * 1000)
                dp.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=sid)
            print(f"| {tier} | {len(times)} | {percentile(times, .5):.0f} | {percentile(times, .95):.0f} |")
        cp.untag_resource(resourceArn=arn, tagKeys=["berth:isolation"])

        # Overhead: the same agent, run directly on the host, against the same agent in a
        # session, both called with the same raw HTTP client (requests signed beforehand).
        version_dir = os.path.join(server.data_dir, "runtimes", deployed["agentRuntimeId"], "1")
        direct = subprocess.Popen(
            [os.path.join(version_dir, "venv", "bin", "python"), os.path.join(version_dir, "app", "main.py")],
            env={**os.environ, "PORT": "18999"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen("http://127.0.0.1:18999/ping", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            body = b'{"op": "count"}'
            conn = http.client.HTTPConnection("127.0.0.1", 18999)
            direct_times = []
            for _ in range(args.warm):
                started = time.perf_counter()
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                conn.getresponse().read()
                direct_times.append((time.perf_counter() - started) * 1000)
            sid = "bench-warm-" + uuid.uuid4().hex
            invoke(body, sid)
            path = f"/runtimes/{urllib.parse.quote(arn, safe='')}/invocations"
            credentials = boto3.Session().get_credentials()
            prepared = []
            for _ in range(args.warm):
                request = AWSRequest(method="POST", url=f"{server.endpoint}{path}", data=body, headers={
                    "Content-Type": "application/json", "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": sid})
                SigV4Auth(credentials, "bedrock-agentcore", "us-east-1").add_auth(request)
                prepared.append(dict(request.headers))
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            berth_times = []
            for headers in prepared:
                started = time.perf_counter()
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
                berth_times.append((time.perf_counter() - started) * 1000)
        finally:
            direct.terminate()
        print("\n## InvokeAgentRuntime overhead (warm session, same agent called directly on localhost)\n")
        print("| path | calls | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        print(f"| agent directly | {args.warm} | {percentile(direct_times, .5):.2f} | {percentile(direct_times, .99):.2f} |")
        print(f"| through Berth (SigV4, session lookup, guest forwarding) | {args.warm} | {percentile(berth_times, .5):.2f} | {percentile(berth_times, .99):.2f} |")
        print(f"\nAdded at p50: **{percentile(berth_times, .5) - percentile(direct_times, .5):.2f} ms**.")

        # Idle density: memory of idle sessions as their cgroups count it.
        sids = ["bench-idle-" + uuid.uuid4().hex for _ in range(args.idle)]
        for sid in sids:
            invoke(b'{"op": "count"}', sid)
        time.sleep(2)
        health = json.loads(urllib.request.urlopen(f"{server.endpoint}/health").read())
        memory = [s["usage"]["memoryCurrentBytes"] for s in health["runtimeSessions"] if s["runtimeSessionId"] in sids]
        average = statistics.mean(memory)
        print("\n## Idle sessions (namespace tier, Python agent after one call)\n")
        print(f"{len(memory)} idle sessions: {average / 2**20:.1f} MiB each on average (cgroup memory, page cache included) "
              f"→ **{2**30 / average:.0f} idle sessions per GiB**.")
        for sid in sids:
            dp.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=sid)

        # 100 MB payload, streamed to the agent (after SigV4 verification of the whole body).
        data = "x" * (100 * 1000 * 1000 - 40)
        payload = json.dumps({"op": "size", "data": data}).encode()
        sid = "bench-big-" + uuid.uuid4().hex
        invoke(b'{"op": "count"}', sid)
        started = time.perf_counter()
        answer = json.loads(invoke(payload, sid))
        elapsed = time.perf_counter() - started
        assert answer["size"] == len(data), answer
        print("\n## 100 MB payload\n")
        print(f"{len(payload) / 1e6:.0f} MB request through boto3 → Berth → agent (which parses it as JSON): "
              f"{elapsed:.2f} s, **{len(payload) / 1e6 / elapsed:.0f} MB/s** end to end.")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
