"""Hostile programs against search/sandbox: every attack really runs; none may pass, none may
harm the host, and the sandbox must keep judging correctly afterwards.

The tasks ask for values the program cannot compute: fresh random tokens that exist only in
this test process and the judge (call tests), or in a HumanEval-style assertion's setup. So a
pass can only come from a forged verdict, a leak of the expected values or of this process's
environment, a network connection to this process, or a file planted on the host.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import tempfile
import textwrap
import threading
import time

import pytest

from search.sandbox import Sandbox, SandboxConfig, full_isolation_available
from search.tasks import CodeTask, TestCase

CANARY = "canary-" + secrets.token_hex(12)  # put in this process's environment before the sandbox starts
TOKENS = ["tok-" + secrets.token_hex(16) for _ in range(3)]
SECRET_DIR = os.path.join(
    tempfile.gettempdir(), "marl-hostile-" + secrets.token_hex(8)
)  # hide_paths; made by sb
HOST_MARK = os.path.join(tempfile.gettempdir(), "marl-hostile-" + secrets.token_hex(8))
REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))

CALL = CodeTask(
    "hostile/call",
    "def f(i): ...",
    "f",
    [TestCase(f"public[{i}]", "call", args=[i], expected=t) for i, t in enumerate(TOKENS)],
    [],
)
ASSERT = CodeTask(
    "hostile/assert",
    "def f(i): ...",
    "f",
    [TestCase(f"check[{i}]", "assert", code=f"assert candidate({i}) == SECRETS[{i}]") for i in range(3)],
    [],
    setup=f"SECRETS = {TOKENS!r}\n",
)
STDIO = CodeTask(
    "hostile/stdio",
    "print the token",
    "main",
    [TestCase(f"public[{i}]", "stdio", stdin=f"{i}\n", expected=t + "\n") for i, t in enumerate(TOKENS)],
    [],
    kind="stdio",
)
GOOD_CALL = "TOK = {}\ndef f(i):\n    return TOK[i]\n"  # formatted with the real tokens: the control


@pytest.fixture(scope="module")
def sb():
    os.environ["MARL_HOSTILE_CANARY"] = CANARY
    os.makedirs(SECRET_DIR, exist_ok=True)
    with open(os.path.join(SECRET_DIR, "answers.txt"), "w") as fh:
        fh.write("\n".join(TOKENS))
    cfg = SandboxConfig(
        workers=2,
        timeout_s=3.0,
        test_timeout_s=1.5,
        cpu_s=3.0,
        memory_mb=256,
        max_processes=8,
        fsize_mb=4,
        tmpfs_mb=16,
        hide_paths=[SECRET_DIR],
    )
    try:
        with Sandbox(cfg) as s:
            yield s
    finally:
        os.environ.pop("MARL_HOSTILE_CANARY", None)
        shutil.rmtree(SECRET_DIR, ignore_errors=True)


def _sandbox_processes(sb: Sandbox) -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every process running under one of the sandbox's uids."""
    uids = {u.key for u in sb._uids}
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}")
            ppid = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if st.st_uid in uids:
            out.append((int(name), ppid, st.st_uid))
    return out


def _owner(pid: int) -> int:
    """The uid owning ``pid``, -1 when it has already exited."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return -1


def _assert_no_survivors(sb: Sandbox) -> None:
    """Only the zygotes' ready children (two per worker, parent owned by root) may remain."""
    if sb.isolation != "full":
        return
    deadline = time.monotonic() + 5.0
    while True:
        procs = _sandbox_processes(sb)
        strays = [p for p in procs if _owner(p[1]) != 0]  # a parent that just exited counts until settled
        if not strays and len(procs) <= 2 * sb.cfg.workers:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes survived their program: {procs}")
        time.sleep(0.05)


def _still_works(sb: Sandbox) -> None:
    good = GOOD_CALL.format(repr(TOKENS))
    r = sb.run(good, CALL)
    assert r.status == "passed", r.message
    r = sb.run(good, ASSERT)
    assert r.status == "passed", r.message


def _check(sb: Sandbox, program: str, tasks=(CALL, ASSERT)) -> list:
    results = [sb.run(program, task) for task in tasks]
    for task, r in zip(tasks, results):
        assert r.status != "passed" and r.passed == 0, (task.task_id, r)
        for t in r.tests:
            assert t.status in ("failed", "error", "timeout", "crash")
            for tok in TOKENS:
                assert tok not in t.output  # nothing leaked into the feedback either
    _assert_no_survivors(sb)
    return results


def test_control_program_passes(sb):
    _still_works(sb)


# ------------------------------------------------------------------------------------------
# forging the verdict
# ------------------------------------------------------------------------------------------
def P(text: str) -> str:
    """A program written indented inside this file."""
    return textwrap.dedent(text).lstrip("\n")


FORGERIES = {
    "sys_exit_at_load": P("""
        import sys
        sys.exit(0)
    """),
    "sys_exit_in_call": P("""
        import sys
        def f(i):
            sys.exit(0)
    """),
    "os_exit_at_load": P("""
        import os
        os._exit(0)
    """),
    "os_exit_in_call": P("""
        import os
        def f(i):
            os._exit(0)
    """),
    "systemexit_in_finally": P("""
        def f(i):
            try:
                return 1 / 0
            finally:
                raise SystemExit(0)
    """),
    "exit_builtin": P("""
        def f(i):
            exit(0)
    """),
    "keyboard_interrupt": P("""
        def f(i):
            raise KeyboardInterrupt
    """),
    "kill_self": P("""
        import os, signal
        def f(i):
            os.kill(os.getpid(), signal.SIGKILL)
            os.killpg(0, signal.SIGKILL)
    """),
    "patch_builtins": P("""
        import builtins
        class Nope(Exception):
            pass
        builtins.AssertionError = Nope
        builtins.isinstance = lambda *a: True
        builtins.len = lambda x: 0
        builtins.str = lambda *a: "passed"
        def f(i):
            return "passed"
    """),
    "always_equal_object": P("""
        class Eq:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def f(i):
            return Eq()
    """),
    "always_equal_str_subclass": P("""
        class S(str):
            def __eq__(self, other):
                return True
            __hash__ = str.__hash__
        def f(i):
            return S("tok-")
    """),
    "always_equal_int_subclass": P("""
        class I(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f(i):
            return I(0)
    """),
    "print_success_markers": P("""
        import sys
        print("passed"); print("ALL TESTS PASSED"); print('{"status": "passed"}')
        def f(i):
            print("passed", file=sys.stderr)
            return "passed"
    """),
    "forge_frames_on_every_socket": P("""
        import os, json
        def frame(o):
            b = json.dumps(o).encode()
            return len(b).to_bytes(4, "big") + b
        fake = [frame({"op": "loaded"})] + [frame({"op": "ret", "value": "tok-0"}) for _ in range(10)]
        fake += [frame({"op": "passed"}), frame({"op": "done", "code": 0}), frame({"status": "passed"})]
        for fd in range(3, 64):
            try:
                os.write(fd, b"".join(fake))
            except OSError:
                pass
        def f(i):
            return "tok-0"
    """),
    "forge_frames_then_exit": P("""
        import os, json
        def f(i):
            b = json.dumps({"op": "ret", "value": "tok-%d" % i}).encode()
            os.write(3, len(b).to_bytes(4, "big") + b)
            os._exit(0)
    """),
    "patch_the_harness": P("""
        import sys, json
        w = sys.modules.get("wire")
        if w is not None:
            w.encode_value = lambda v, depth=0: "tok-0"
            w.pack_frame = lambda o: b'\\x00\\x00\\x00\\x10{"op": "passed"}'
        json.dumps = lambda *a, **k: '{"op": "ret", "value": "tok-0"}'
        def f(i):
            return "tok-0"
    """),
    "close_the_channel": P("""
        import os
        def f(i):
            for fd in (0, 1, 2, 3):
                os.close(fd)
            return "x"
    """),
    "garbage_on_the_channel": P("""
        import os
        def f(i):
            os.write(3, b"\\xff" * 100000)
            return "x"
    """),
    "huge_frame_claim": P("""
        import os
        def f(i):
            os.write(3, (2**31).to_bytes(4, "big"))
            return "x"
    """),
    "read_expected_values_from_memory": P("""
        import gc, sys
        def tokens(values):
            return {v for v in values if isinstance(v, str) and v.startswith("tok-") and len(v) == 36}
        def f(i):
            found = set()
            for o in gc.get_objects():
                if isinstance(o, dict):
                    found |= tokens(o.values())
                elif isinstance(o, (list, tuple)):
                    found |= tokens(o)
            frame = sys._getframe()
            while frame:
                found |= tokens(list(frame.f_locals.values()) + list(frame.f_globals.values()))
                frame = frame.f_back
            return sorted(found)[i] if len(found) > i else "none"
    """),
    "read_the_task_files": P(f"""
        import glob
        def f(i):
            paths = glob.glob({SECRET_DIR!r} + "/*") + glob.glob({REPO!r} + "/**/*.py", recursive=True)
            for path in paths:
                try:
                    text = open(path).read()
                except OSError:
                    continue
                if "tok-" in text:
                    return [w for w in text.split() if w.startswith("tok-")][i]
            return "none"
    """),
    "kill_parent_and_everyone": P("""
        import os, signal
        def f(i):
            targets = [os.getppid(), 1, -1, 0]
            targets += [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != os.getpid()]
            for target in targets:
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            return "x"
    """),
    "ptrace_and_proc_mem_of_the_judge": P("""
        import ctypes, os
        def f(i):
            libc = ctypes.CDLL(None)
            got = []
            for name in os.listdir("/proc"):
                if name.isdigit() and int(name) != os.getpid():
                    got.append(libc.ptrace(16, int(name), 0, 0))  # PTRACE_ATTACH
                    try:
                        open(f"/proc/{name}/mem", "rb").read(1)
                        got.append("mem")
                    except OSError:
                        pass
            return "mem" if "mem" in got else str([g for g in got if g == 0])
    """),
    "regain_root": P("""
        import os, subprocess
        def f(i):
            out = []
            for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.seteuid(0)):
                try:
                    call()
                    out.append("root")
                except OSError:
                    pass
            for cmd in (["sudo", "-n", "id", "-u"], ["su", "-c", "id -u"], ["id", "-u"]):
                try:
                    run = subprocess.run(cmd, capture_output=True, text=True, timeout=0.5)
                    out.append(run.stdout.strip())
                except Exception:
                    pass
            return str(out)
    """),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgery_never_passes(sb, name):
    _check(sb, FORGERIES[name])


def test_stdio_exit_tricks_never_pass(sb):
    for prog in (
        "import sys\nsys.exit(0)\n",
        "import os\nprint('tok-guess')\nos._exit(0)\n",
        "try:\n    x = 1 / 0\nfinally:\n    raise SystemExit(0)\n",
        P("""
            import os, json
            b = json.dumps({"op": "done", "code": 0}).encode()
            os.write(3, len(b).to_bytes(4, "big") + b)
        """),
        "print('passed')\n",
    ):
        r = sb.run(prog, STDIO)
        assert r.status != "passed" and r.passed == 0, (prog, r)
    good = f"TOK = {TOKENS!r}\nprint(TOK[int(input())])\n"
    assert sb.run(good, STDIO).status == "passed"


# ------------------------------------------------------------------------------------------
# resources
# ------------------------------------------------------------------------------------------
RESOURCE_BOMBS = {
    "infinite_loop": P("""
        def f(i):
            while True:
                pass
    """),
    "infinite_loop_at_load": P("""
        while True:
            pass
    """),
    "ignore_signals_and_loop": P("""
        import signal
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        def f(i):
            while True:
                pass
    """),
    "sleep_forever": P("""
        import time
        def f(i):
            time.sleep(3600)
    """),
    "memory_bomb_at_once": P("""
        def f(i):
            x = bytearray(10 ** 10)
            return "x"
    """),
    "memory_bomb_gradual": P("""
        def f(i):
            x = []
            while True:
                x.append(bytearray(10 ** 6))
    """),
    "recursion_bomb": P("""
        import sys
        sys.setrecursionlimit(10 ** 7)
        def f(i):
            return f(i + 1)
    """),
    "huge_output": P("""
        def f(i):
            while True:
                print("x" * 10000)
    """),
    "huge_file": P("""
        def f(i):
            with open("big", "wb") as fh:
                while True:
                    fh.write(b"x" * 10 ** 6)
    """),
    "fill_the_tmpfs": P("""
        def f(i):
            n = 0
            while True:
                with open(f"part{n}", "wb") as fh:
                    fh.write(b"x" * 3 * 10 ** 6)
                n += 1
    """),
    "thread_bomb": P("""
        import threading, time
        def f(i):
            while True:
                threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
    """),
    "fork_and_allocate": P("""
        import os
        def f(i):
            for _ in range(6):
                if os.fork() == 0:
                    x = bytearray(200 * 10 ** 6)
                    while True:
                        pass
            while True:
                pass
    """),
    "open_files_bomb": P("""
        def f(i):
            keep = []
            while True:
                keep.append(open("/dev/null"))
    """),
}


@pytest.mark.parametrize("name", sorted(RESOURCE_BOMBS))
def test_resource_bomb_is_contained(sb, name):
    t0 = time.monotonic()
    results = _check(sb, RESOURCE_BOMBS[name], tasks=(CALL,))
    assert time.monotonic() - t0 < sb.cfg.timeout_s + 5.0
    assert results[0].wall_s <= sb.cfg.timeout_s + 1.0
    if name == "huge_output":
        assert all(len(t.output) < 2 * sb.cfg.max_output_bytes for t in results[0].tests)
    _still_works(sb)


def test_fork_bomb_is_stopped_and_the_host_stays_responsive(sb):
    ticks: list[float] = []
    stop = threading.Event()

    def heartbeat() -> None:  # a host thread that must keep running while the bomb goes off
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    th = threading.Thread(target=heartbeat)
    th.start()
    try:
        bomb = P("""
            import os
            def f(i):
                while True:
                    try:
                        os.fork()
                    except OSError:
                        pass
        """)
        t0 = time.monotonic()
        _check(sb, bomb, tasks=(CALL,))
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        th.join()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert elapsed < sb.cfg.timeout_s + 5.0
    assert max(gaps) < 1.0  # the host never froze for a second
    _still_works(sb)


def test_surviving_daemons_are_killed(sb):
    daemon = P("""
        import os, signal, time
        def f(i):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    for s in range(1, 32):
                        try:
                            signal.signal(s, signal.SIG_IGN)
                        except (OSError, ValueError):
                            pass
                    while True:
                        time.sleep(0.05)
                os._exit(0)
            time.sleep(0.2)
            return "x"
    """)
    _check(sb, daemon, tasks=(CALL,))  # includes the check that no process outlived its program
    _still_works(sb)


# ------------------------------------------------------------------------------------------
# host: network, files, environment
# ------------------------------------------------------------------------------------------
def test_no_network_even_to_localhost(sb):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections: list = []
    stop = threading.Event()

    def serve() -> None:  # hands out the answers to anyone who connects
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.sendall("\n".join(TOKENS).encode())
            conn.close()

    th = threading.Thread(target=serve)
    th.start()
    try:
        prog = (
            "import socket\n"
            "def f(i):\n"
            "    for host in ('127.0.0.1', 'localhost', '::1', '10.0.2.2', '1.1.1.1'):\n"
            "        try:\n"
            f"            s = socket.create_connection((host, {port}), timeout=0.5)\n"
            "            return s.recv(4096).decode().split()[i]\n"
            "        except OSError:\n"
            "            pass\n"
            "    try:\n"
            "        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "        u.sendto(b'x', ('8.8.8.8', 53))\n"
            "        return 'udp-sent'\n"
            "    except OSError:\n"
            "        return 'none'\n"
        )
        results = _check(sb, prog)
    finally:
        stop.set()
        th.join()
        server.close()
    assert connections == []
    if sb.isolation == "full":
        assert "udp-sent" not in results[0].tests[0].message


def test_no_writes_outside_the_working_directory(sb):
    targets = [HOST_MARK, os.path.join(REPO, "marl-hostile-mark"), "/root/marl-hostile-mark",
               "/var/tmp/marl-hostile-mark", "/dev/shm/marl-hostile-mark", "/marl-hostile-mark",
               os.path.join(SECRET_DIR, "answers.txt")]  # fmt: skip
    prog = (
        "import os\n"
        "def f(i):\n"
        "    done = []\n"
        f"    for path in {targets!r}:\n"
        "        try:\n"
        "            with open(path, 'a') as fh:\n"
        "                fh.write('pwned')\n"
        "            done.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    for d in ('/tmp', '/'):\n"
        "        try:\n"
        "            os.mkdir(os.path.join(d, 'marl-hostile-dir'))\n"
        "            done.append(d)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return str(done)\n"
    )
    results = _check(sb, prog)
    for path in targets[:-1]:
        assert not os.path.exists(path), path
    with open(os.path.join(SECRET_DIR, "answers.txt")) as fh:
        assert "pwned" not in fh.read()
    if sb.isolation == "full":
        assert "returned '[]'" in results[0].tests[0].message  # every write failed inside the sandbox


def test_the_hosts_environment_is_invisible(sb):
    assert os.environ.get("MARL_HOSTILE_CANARY") == CANARY
    prog = (
        "import os\n"
        "def f(i):\n"
        "    seen = dict(os.environ)\n"
        "    for name in os.listdir('/proc'):\n"
        "        if name.isdigit() or name == 'self':\n"
        "            try:\n"
        "                seen[name] = open(f'/proc/{name}/environ', 'rb').read().decode(errors='replace')\n"
        "            except OSError:\n"
        "                pass\n"
        "    blob = repr(seen)\n"
        "    k = blob.find('canary-')\n"
        "    return blob[k:k + 31] if k >= 0 else 'env:' + ','.join(sorted(os.environ))\n"
    )
    canary_task = CodeTask(
        "hostile/env", "def f(i): ...", "f", [TestCase("public[0]", "call", args=[0], expected=CANARY)], []
    )
    (r,) = _check(sb, prog, tasks=(canary_task,))
    if sb.isolation == "full":
        # what the program sees is the scrubbed environment only
        assert r.tests[0].message.startswith("f(0) returned 'env:HOME,LANG,")


@pytest.mark.skipif(not full_isolation_available(), reason="needs full isolation (root)")
def test_the_judge_and_zygote_survive_attacks(sb):
    judges = [w.proc.pid for w in sb._workers]
    _check(sb, FORGERIES["kill_parent_and_everyone"])
    for pid in judges:
        os.kill(pid, 0)  # still alive (raises if not)
    assert [w.proc.pid for w in sb._workers] == judges  # no worker had to be replaced
    _still_works(sb)


def test_a_killed_worker_is_replaced(sb):
    """If a judge dies anyway (here: we kill it), its job is retried on a fresh worker."""
    victim = sb._workers[0]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    _still_works(sb)
    assert all(w.proc.poll() is None for w in sb._workers)
