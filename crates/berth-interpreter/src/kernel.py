# The Python kernel of a Code Interpreter session (berth-interpreter/src/kernel.rs starts it as
# the sandbox's service). It keeps one namespace across cells, so variables persist between
# executeCode calls, and answers one JSON line per connection on 127.0.0.1:PORT:
#   request  {"code": str, "clear": bool, "timeout": float, "limit": int}
#   reply    {"stdout": str, "stderr": str, "stdoutOmitted": int, "stderrOmitted": int,
#             "error": bool, "timedOut": bool, "images": [base64 PNG], "seconds": float}
# Output is captured at the file-descriptor level, so subprocesses and C extensions are
# captured too. A cell that runs past its timeout gets a KernelTimeout raised by SIGALRM,
# which leaves the namespace intact; the host kills the process if even that does not stop it.
import ast
import asyncio
import base64
import builtins
import importlib
import inspect
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback


class KernelTimeout(BaseException):
    """Raised in the running cell at its deadline; a BaseException so `except Exception` in the
    cell does not swallow it."""


def fresh_namespace():
    return {"__name__": "__main__", "__builtins__": builtins}


namespace = fresh_namespace()


def on_alarm(signum, frame):
    raise KernelTimeout()


def run_cell(code):
    # Packages `pip install`ed since the last cell become importable.
    importlib.invalidate_caches()
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    result = eval(compile(tree, "<cell>", "exec", flags=flags), namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval", flags=flags), namespace)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        if value is not None:
            print(repr(value))


def figures():
    """Open matplotlib figures as PNGs (closed afterwards); matplotlib is not imported here."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", bbox_inches="tight")
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    plt.close("all")
    return images


def read_capture(capture, limit):
    size = os.fstat(capture.fileno()).st_size
    capture.seek(0)
    data = capture.read(limit)
    return data.decode("utf-8", "replace"), max(0, size - len(data))


def execute(request):
    global namespace
    if request.get("clear"):
        namespace = fresh_namespace()
    limit = int(request.get("limit", 1 << 20))
    out = tempfile.TemporaryFile(dir="/tmp")
    err = tempfile.TemporaryFile(dir="/tmp")
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    error = timed_out = False
    images = []
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max(0.001, float(request.get("timeout", 60))))
    try:
        try:
            run_cell(request.get("code", ""))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except KernelTimeout:
        error = timed_out = True
    except SystemExit as exit:
        error = exit.code not in (None, 0)
    except BaseException as exc:
        error = True
        tb = exc.__traceback__
        # Drop the kernel's own frames: the traceback starts in the cell.
        while tb is not None and tb.tb_frame.f_globals is globals():
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
    seconds = time.monotonic() - started
    try:
        images = figures()
    except Exception:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])
    stdout, stdout_omitted = read_capture(out, limit)
    stderr, stderr_omitted = read_capture(err, limit)
    out.close()
    err.close()
    return {
        "stdout": stdout,
        "stderr": stderr,
        "stdoutOmitted": stdout_omitted,
        "stderrOmitted": stderr_omitted,
        "error": error,
        "timedOut": timed_out,
        "images": images,
        "seconds": seconds,
    }


def serve(port):
    signal.signal(signal.SIGALRM, on_alarm)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        with connection:
            stream = connection.makefile("rwb")
            line = stream.readline()
            if not line:
                continue
            try:
                reply = execute(json.loads(line))
            except Exception as exc:  # a malformed request: the kernel itself keeps going
                reply = {"stdout": "", "stderr": f"kernel: {exc}\n", "error": True, "images": []}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()


if __name__ == "__main__":
    config = os.environ.get("MPLCONFIGDIR")
    prebuilt = os.environ.get("BERTH_MPLCONFIG_PREBUILT")
    if config and prebuilt and os.path.isdir(prebuilt) and not os.path.exists(config):
        shutil.copytree(prebuilt, config)
    sys.argv = [""]
    serve(int(os.environ["BERTH_KERNEL_PORT"]))
