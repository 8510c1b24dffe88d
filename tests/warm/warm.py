"""Warm starts for the suite's processes: fairseq-train, `ehft` and `python -m benchmarks.*`
forked from a process that has already imported torch and fairseq, instead of each paying
those seconds again (most of a tiny run's time).

Each pytest worker starts one server (`serve`, through tests/conftest.py) and names its socket
in EHFT_WARM_SOCKET; tests/warm is put first on PYTHONPATH, so every Python process the tests
start, at any depth, runs tests/warm/sitecustomize.py before anything else. When the process is
one of the programs above it hands itself over (`hand_over`): it sends the server its
arguments, working directory, environment and standard streams, the server forks, and the fork
runs the program in that state. The process that was started stays as the program's stand-in:
a signal sent to it is passed on, it exits with the program's exit code (or dies of the same
signal), and if it is killed the program dies with everything in its process group (a
lifeline pipe). What differs from a cold start: the program's parent is the server, not the
process that started it (a test that looks at the process tree runs cold: @pytest.mark.cold),
and what torch and fairseq print while being imported is not printed again.

EHFT_COLD=1 makes every process start cold, as outside the tests.
"""

import array
import json
import os
import select
import signal
import socket
import sys

SOCKET_VARIABLE = "EHFT_WARM_SOCKET"
PROGRAMS = ("fairseq-train", "ehft")  # console scripts next to the interpreter
MODULE_PREFIXES = ("benchmarks.", "warm_probe")  # python -m <module>; tests/test_warm.py's
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
# a torchrun worker or a rank under srun is watched by its launcher through its own pid
DISTRIBUTED = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID")


def program(orig_argv, environ):
    """What to run warm for a process started as `orig_argv`: ("script", path) or
    ("module", name), or None where it must start cold."""
    if len(orig_argv) < 2 or any(name in environ for name in DISTRIBUTED):
        return None
    first = orig_argv[1]
    if (os.path.basename(first) in PROGRAMS
            and os.path.dirname(os.path.abspath(first)) == os.path.dirname(sys.executable)):
        return ("script", first)
    if (first == "-m" and len(orig_argv) > 2
            and orig_argv[2].startswith(MODULE_PREFIXES)):
        return ("module", orig_argv[2])
    return None


# ---- the stand-in (runs in the started process, before site-packages' imports) ----

def hand_over(path, kind, name, argv):
    """Have the server run the program; never returns (exits as the program did) once the
    server has taken it. Returns at once where no server answers: the process goes on cold."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        return
    life_read, life_write = os.pipe()  # the program dies if this process does (EOF)
    streams = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            streams.append(fd)
        except OSError:  # a closed stream: the program gets /dev/null
            streams.append(os.open(os.devnull, os.O_RDWR))
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({"kind": kind, "name": name, "argv": argv, "cwd": os.getcwd(),
                          "env": dict(os.environ), "umask": umask}).encode()
    connection.sendmsg([len(request).to_bytes(8, "big") + request],
                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                         array.array("i", streams + [life_read]))])
    os.close(life_read)
    reply = connection.makefile("rb")
    pid = int(reply.readline())
    for number in FORWARDED:
        signal.signal(number, lambda number, _frame: _pass_on(pid, number))
    status = json.loads(reply.readline() or b'{"code": 1}')
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
    os._exit(status["code"])


def _pass_on(pid, number):
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


# ---- the server ----

def serve(path):
    """Import what the programs import, then fork one child per request, forever (the
    worker that started it ends it)."""
    # in the order fairseq-train imports them: fairseq_cli.train configures logging first
    import fairseq_cli.train  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the socket exists only once it accepts
    waiting = {}  # pid -> the stand-in's connection
    parent = os.getppid()
    while os.getppid() == parent:  # the pytest worker is gone: stop
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready:
            connection, _ = listener.accept()
            try:
                waiting[_fork(listener, connection)] = connection
            except (OSError, ValueError):  # a stand-in gone or garbled: the server goes on
                connection.close()
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            connection = waiting.pop(pid, None)
            if connection is None:  # its stand-in went before it was told the pid
                continue
            result = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                      else {"code": os.waitstatus_to_exitcode(status)})
            try:
                connection.sendall(json.dumps(result).encode() + b"\n")
            except OSError:
                pass  # the stand-in is gone; the lifeline ended the program
            connection.close()


_INT = array.array("i").itemsize  # bytes of one file descriptor in SCM_RIGHTS


def _fork(listener, connection):
    header, fds, _, _ = connection.recvmsg(8 + 65536, socket.CMSG_SPACE(4 * _INT))
    size = int.from_bytes(header[:8], "big")
    payload = header[8:]
    while len(payload) < size:
        payload += connection.recv(size - len(payload))
    received = array.array("i")
    for level, kind, data in fds:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received.frombytes(data[:len(data) - len(data) % received.itemsize])
    request = json.loads(payload)
    if len(received) != 4:
        raise ValueError("expected 4 file descriptors, got %d" % len(received))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            listener.close()
            connection.close()
            _run(request, list(received))  # exits as the program did
        finally:
            os._exit(1)  # never back into the server's loop
    for fd in received:
        os.close(fd)
    try:
        os.setpgid(pid, pid)  # also done by the child: whichever runs first
    except OSError:
        pass
    connection.sendall(b"%d\n" % pid)
    return pid


def _run(request, fds):
    """In the fork: become the started process, run the program, exit as it did."""
    import atexit
    import runpy
    import threading
    import traceback

    os.setpgid(0, 0)
    stdin, stdout, stderr, lifeline = fds
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    for fd in {stdin, stdout, stderr}:
        if fd > 2:
            os.close(fd)

    def die_with_stand_in():
        os.read(lifeline, 1)  # EOF: the stand-in ended before the program
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=die_with_stand_in, daemon=True).start()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    import torch

    threads = env.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads and threads.isdigit() else os.cpu_count())
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    base = [p for p in sys.path[1:] if p not in extra]
    script = request["kind"] == "script"
    # sys.path[0] as Python sets it: the script's folder, or for -m the working directory
    sys.path[:] = ([os.path.dirname(os.path.abspath(request["name"])) if script
                    else os.getcwd()] + extra + base)
    sys.argv = [request["name"], *request["argv"]]
    code = 0
    try:
        if script:
            runpy.run_path(request["name"], run_name="__main__")
        else:
            runpy.run_module(request["name"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve(sys.argv[1])
