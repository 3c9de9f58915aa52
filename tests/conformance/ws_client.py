"""Runs the SDK's WebSocket helpers against Berth's TLS listener, as a user does after mapping
an AWS-suffixed host name to Berth and trusting its CA: `BEDROCK_AGENTCORE_DP_ENDPOINT`,
`SSL_CERT_FILE` and the AWS variables come from the environment (the SDK reads the endpoint
when it is imported, hence a process of its own). Prints one JSON object of outcomes.

    python ws_client.py SIGV4_ARN JWT_ARN BEARER_TOKEN
"""

import asyncio
import json
import sys
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import websockets
from bedrock_agentcore.runtime import AgentCoreRuntimeClient
from bedrock_agentcore.runtime.shell import OAuthAuth, PresignedAuth, ShellChannel
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest


async def echo(url, headers=None):
    """The greeting, a text echo and a binary echo, or the HTTP status that refused the upgrade."""
    try:
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            greeting = await ws.recv()
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x01\x02\x03")
            binary = await ws.recv()
            return {"greeting": greeting, "text": text, "binary": list(binary)}
    except websockets.exceptions.InvalidStatus as refused:
        return {"status": refused.response.status_code}


async def oversized(url, headers):
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        try:
            await ws.send("x" * (17 * 1024 * 1024))
            await ws.recv()
            return {"closed": None}
        except websockets.exceptions.ConnectionClosed as closed:
            return {"closed": closed.rcvd.code if closed.rcvd else closed.sent.code if closed.sent else None}


async def shell_until(shell, needle, send=None):
    """Output of an open shell until `needle` appears or the shell ends."""
    if send:
        await shell.send(send)
    seen = ""
    async for frame in shell:
        if frame.channel == ShellChannel.STDOUT:
            seen += frame.text
            if needle and needle in seen:
                break
    return seen


async def shells(client, sigv4_arn, jwt_arn, token):
    """Interactive shells through the SDK's ShellSession: SigV4, presigned, OAuth, re-attach,
    resize, take-over, and exit codes."""
    out = {}
    sid = "shell-session-" + uuid.uuid4().hex
    async with client.open_shell(sigv4_arn, session_id=sid, shell_id="debug") as shell:
        await shell.resize(132, 43)
        out["first"] = await shell_until(shell, "size=43 132", "export MARK=kept; echo size=$(stty size)\n")
    # Re-attach: the earlier output is replayed and the shell's state is there.
    async with client.open_shell(sigv4_arn, session_id=sid, shell_id="debug") as shell:
        out["replayed"] = await shell_until(shell, "size=43 132")
        out["state"] = await shell_until(shell, "mark=kept", "echo mark=$MARK\n")
        # A second client takes the shell over; the first is told (close code 4000).
        async with client.open_shell(sigv4_arn, session_id=sid, shell_id="debug") as second:
            await shell_until(shell, None)
            out["kicked"] = shell.kicked
            out["exit_output"] = await shell_until(second, None, "echo bye; exit 3\n")
            out["exit_code"] = second.exit_code
    async with client.open_shell(sigv4_arn, auth=PresignedAuth(expires=60)) as shell:
        await shell_until(shell, None, "exit 0\n")
        out["presigned_exit"] = shell.exit_code
    async with client.open_shell(jwt_arn, auth=OAuthAuth(bearer_token=token)) as shell:
        out["oauth"] = await shell_until(shell, "whoami-ok", "echo whoami-ok\n")
    try:
        async with client.open_shell(jwt_arn) as shell:
            out["sigv4_shell_to_jwt"] = "connected"
    except websockets.exceptions.InvalidStatus as refused:
        out["sigv4_shell_to_jwt"] = refused.response.status_code
    return out


def tamper(url):
    parts = urlsplit(url)
    query = [(k, ("0" * 64 if k == "X-Amz-Signature" else v)) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def presign_for(url, expires):
    """Re-signs a presigned URL for `expires` seconds, past what the SDK allows."""
    parts = urlsplit(url.replace("wss://", "https://"))
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("X-Amz-")]
    request = AWSRequest(method="GET", url=urlunsplit(parts._replace(query=urlencode(query))), headers={"host": parts.hostname})
    credentials = boto3.Session().get_credentials().get_frozen_credentials()
    SigV4QueryAuth(credentials, "bedrock-agentcore", "us-east-1", expires=expires).add_auth(request)
    return request.url.replace("https://", "wss://")


async def main(sigv4_arn, jwt_arn, token):
    client = AgentCoreRuntimeClient(region="us-east-1")
    sid = "ws-session-" + uuid.uuid4().hex
    out = {}
    url, headers = client.generate_ws_connection(sigv4_arn, session_id=sid)
    out["url"] = url
    out["sigv4"] = await echo(url, headers)
    out["sigv4_again"] = await echo(*client.generate_ws_connection(sigv4_arn, session_id=sid))
    out["presigned"] = await echo(client.generate_presigned_url(sigv4_arn, session_id=sid, expires=300))
    out["oauth"] = await echo(*client.generate_ws_connection_oauth(jwt_arn, token))
    out["sigv4_to_jwt_runtime"] = await echo(*client.generate_ws_connection(jwt_arn))
    out["oauth_to_sigv4_runtime"] = await echo(*client.generate_ws_connection_oauth(sigv4_arn, token))
    out["tampered"] = await echo(tamper(client.generate_presigned_url(sigv4_arn, session_id=sid)))
    out["too_long"] = await echo(presign_for(client.generate_presigned_url(sigv4_arn, session_id=sid), 301))
    expiring = client.generate_presigned_url(sigv4_arn, session_id=sid, expires=1)
    time.sleep(2.5)
    out["expired"] = await echo(expiring)
    out["oversized"] = await oversized(*client.generate_ws_connection(sigv4_arn, session_id=sid))
    out["after_oversized"] = await echo(*client.generate_ws_connection(sigv4_arn, session_id=sid))
    out["shells"] = await shells(client, sigv4_arn, jwt_arn, token)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
