"""The suite's warm starts (tests/warm/warm.py): a program forked from the worker's server
behaves as the process that was started would, in what it is given (arguments, working
directory, environment, standard streams) and in how it ends (exit code, a signal, its
stand-in killed); EHFT_COLD=1 starts it cold."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.environ.get("EHFT_WARM_SOCKET") or os.environ.get("EHFT_COLD") == "1",
    reason="no warm server in this session (EHFT_COLD=1)")]


def _probe(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "warm_probe", *args], capture_output=True,
                          text=True, **kwargs)


def _gone(pid, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(") ")[-1].startswith("Z"):  # a zombie has ended
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_warm_program_gets_the_arguments_directory_environment_and_streams(tmp_path):
    result = _probe("describe", "a b", cwd=tmp_path, input="hello\n",
                    env=dict(os.environ, PROBE="seen"))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"][0].endswith("warm_probe.py") and seen["argv"][1:] == ["describe", "a b"]
    assert seen["cwd"] == str(tmp_path) and seen["probe"] == "seen" and seen["stdin"] == "hello"
    assert seen["preloaded"] and seen["parent"] != os.getpid()  # forked from the server


@pytest.mark.parametrize("env", [{"EHFT_COLD": "1"}, {"EHFT_WARM_SOCKET": "/nonexistent"}],
                         ids=["EHFT_COLD", "no server"])
def test_ehft_cold_or_no_server_starts_it_cold(env):
    seen = json.loads(_probe("describe", input="", env=dict(os.environ, **env)).stdout)
    assert not seen["preloaded"] and seen["parent"] == os.getpid()


@pytest.mark.parametrize("args, code, stderr", [
    (["exit", "3"], 3, ""),
    (["exit", "refused"], 1, "refused"),
    (["raise"], 1, "ValueError: raised by the probe"),
])
def test_it_exits_as_the_program_did(args, code, stderr):
    result = _probe(*args)
    assert result.returncode == code and stderr in result.stderr
    if args == ["raise"]:
        assert result.stderr.startswith("Traceback (most recent call last):")


def test_a_signal_to_the_started_process_reaches_the_program():
    started = subprocess.Popen([sys.executable, "-m", "warm_probe", "wait"],
                               stdout=subprocess.PIPE, text=True)
    program, child = map(int, started.stdout.readline().split())
    assert program != started.pid
    started.send_signal(signal.SIGTERM)
    assert started.wait(timeout=30) == -signal.SIGTERM  # it died of the signal, as the program
    assert _gone(program)
    os.kill(child, signal.SIGKILL)


def test_killing_the_started_process_kills_the_program_and_its_children():
    started = subprocess.Popen([sys.executable, "-m", "warm_probe", "wait"],
                               stdout=subprocess.PIPE, text=True)
    program, child = map(int, started.stdout.readline().split())
    started.kill()  # SIGKILL: nothing of the stand-in runs
    started.wait()
    assert _gone(program) and _gone(child)


def test_a_garbled_request_leaves_the_server_serving():
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as garbled:
        garbled.connect(os.environ["EHFT_WARM_SOCKET"])
        garbled.sendall(b"\0" * 8 + b"not json")
        assert garbled.recv(16) == b""  # refused: closed without a pid
    assert json.loads(_probe("describe", input="").stdout)["preloaded"]
