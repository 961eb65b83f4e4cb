"""An innocent program's verdict never depends on what ran before it (regression for the review's item 3).

Each abusive program runs on a one-worker sandbox with an honest program queued right behind it on the
same worker; the honest one must pass. The abusers: every resource bomb of test_hostile.py, and the
review's attacks on the trusted side and on cleanup: a reply whose set elements all hash alike, a
5,000-digit integer in a forged reply, a directory tree 1,200 levels deep, trees nested past PATH_MAX
holding data, a full tmpfs. The honest program also fills most of its tmpfs, so it fails if what an
abuser wrote was left behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from search.sandbox import Sandbox, SandboxConfig
from tests.search.test_hostile import CALL, RESOURCE_BOMBS, TOKENS, P

TMPFS_MB = 16
# writes 9 of the 16 MB of its tmpfs, then answers: so it fails if an abuser left 8 MB behind
HONEST = P(f"""
    TOK = {TOKENS!r}
    def f(i):
        for k in range(3):
            with open(f"honest{{k}}", "wb") as fh:
                fh.write(b"h" * (3 << 20))
        return TOK[i]
""")
P61 = (1 << 61) - 1
ATTACKS = {
    "set_of_colliding_ints": P(f"""
        import os
        def f(i):  # a forged reply: building such a set here would be quadratic for the program itself
            items = ",".join(str({P61} * k + 7) for k in range(40000))
            body = ('{{"op":"ret","value":{{"S":[' + items + ']}},"o":[0,0]}}').encode()
            os.write(3, len(body).to_bytes(4, "big") + body)
            return "x"
    """),
    "list_of_colliding_ints": P(f"""
        def f(i):
            return [{P61} * k + 7 for k in range(25000)]
    """),
    "forged_reply_with_a_5000_digit_int": P("""
        import os
        def f(i):
            body = ('{"op":"ret","value":' + "7" * 5000 + ',"o":[0,0]}').encode()
            os.write(3, len(body).to_bytes(4, "big") + body)
            return "x"
    """),
    "forged_reply_of_nested_lists": P("""
        import os
        def f(i):
            body = ('{"op":"ret","value":[' + ",".join(["[]"] * 300000) + '],"o":[0,0]}').encode()
            os.write(3, len(body).to_bytes(4, "big") + body)
            return "x"
    """),
    "tree_1200_levels_deep": P("""
        import os
        def f(i):
            for _ in range(1200):
                os.mkdir("d")
                os.chdir("d")
            open("leaf", "w").write("x")
            return "x"
    """),
    "trees_past_path_max_full_of_data": P("""
        import os
        def f(i):
            for top in range(3):
                os.chdir(os.environ.get("HOME", "."))
                os.mkdir(f"t{top}")
                os.chdir(f"t{top}")
                for _ in range(40):  # 40 x 250 characters: far past PATH_MAX (4096)
                    os.mkdir("n" * 250)
                    os.chdir("n" * 250)
                    os.chmod(".", 0o300)  # and unreadable on the way
                with open("data", "wb") as fh:
                    fh.write(b"x" * (4 << 20))
            return "x"
    """),
    "fill_the_tmpfs_and_hide": P("""
        import os
        def f(i):
            os.mkdir(".hidden")
            os.chdir(".hidden")
            n = 0
            try:
                while True:
                    with open(f"part{n}", "wb") as fh:
                        fh.write(b"x" * (1 << 20))
                    n += 1
            except OSError:
                pass
            os.chmod(".", 0)
            return "x"
    """),
}


def _cfg(**kw) -> SandboxConfig:
    base = dict(
        workers=1, timeout_s=1.0, test_timeout_s=1.0, cpu_s=1.0, memory_mb=256, max_processes=8, fsize_mb=4,
        tmpfs_mb=TMPFS_MB,
    )  # fmt: skip
    base.update(kw)
    return SandboxConfig(**base)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(_cfg()) as s:
        yield s


def test_the_honest_program_passes_alone(sb):
    assert sb.run(HONEST, CALL).status == "passed"


ABUSERS = {**{f"bomb:{k}": v for k, v in RESOURCE_BOMBS.items()}, **ATTACKS}


def test_an_honest_program_queued_behind_each_abuser_passes(sb):
    judge = sb._workers[0].proc.pid
    names = sorted(ABUSERS)
    items = [x for name in names for x in ((ABUSERS[name], CALL), (HONEST, CALL))]
    results = sb.run_many(items)  # one worker: each honest job waits right behind its abuser
    abused = {name: results[2 * k] for k, name in enumerate(names)}
    honest = {name: results[2 * k + 1] for k, name in enumerate(names)}
    assert {n: r.status for n, r in abused.items() if r.status == "passed"} == {}
    assert {n: (r.status, r.message[:300]) for n, r in honest.items() if r.status != "passed"} == {}
    assert sb._workers[0].proc.pid == judge  # and no abuser took the judge down on the way


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_attack_on_the_judge_or_cleanup_fails_alone(sb, name):
    r = sb.run(ATTACKS[name], CALL)
    assert r.status in ("failed", "crash", "error", "timeout") and r.passed == 0
    if name.startswith(("set_of", "list_of")):
        assert r.status == "crash" and "hash flooding" in r.message and r.wall_s < 1.0
    if name == "forged_reply_with_a_5000_digit_int":
        assert r.status == "crash" and "result channel" in r.message and "digits" in r.message
    if name == "forged_reply_of_nested_lists":  # well-formed, within the size limit: just a wrong value
        assert r.status == "failed"


def _vm_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def test_decoding_the_largest_reply_keeps_the_judge_small(sb):
    # the reply that builds the most objects per byte (a tuple, its items and its bookkeeping per 9 bytes),
    # forged to the size limit: the judge's peak grows by well under 100 MB (the review: an 8 MB reply,
    # then allowed, took a judge from 18 to 454 MB), and its address space is capped (judge_memory_mb)
    n = sb.cfg.max_result_bytes // 9 - 100
    forged = P(f"""
        import os
        def f(i):
            body = ('{{"op":"ret","value":[' + ",".join(['{{"T":[]}}'] * {n}) + '],"o":[0,0]}}').encode()
            os.write(3, len(body).to_bytes(4, "big") + body)
            return "x"
    """)
    judge = sb._workers[0].proc.pid
    before = _vm_kb(judge, "VmHWM")
    bad, good = sb.run_many([(forged, CALL), (HONEST, CALL)])
    assert bad.status == "failed" and good.status == "passed"
    assert (_vm_kb(judge, "VmHWM") - before) // 1024 < 100
    assert _vm_kb(judge, "VmPeak") // 1024 <= sb.cfg.judge_memory_mb


def test_a_reply_too_large_for_the_judges_memory_is_a_wire_error():
    # what a judge at its memory limit does with a reply: WireError (the program: crash), not MemoryError
    import subprocess
    import sys

    code = (
        "import resource; from search.sandbox import wire\n"
        "data = b'[' + b','.join([b'[]'] * 3_000_000) + b']'\n"
        "resource.setrlimit(resource.RLIMIT_AS, (200 << 20, resource.RLIM_INFINITY))\n"
        "try:\n    wire.loads(data)\nexcept wire.WireError as e:\n    print('WireError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("WireError") and "MemoryError" in out.stdout, out.stderr[-2000:]


def test_jobs_queued_behind_a_lost_worker_are_not_charged():
    """The worker running a job is lost twice (here: we kill its judge): that job is reported as a crash
    after one retry; the honest jobs queued behind it were never started and pass."""
    sleeper = P("""
        import time
        def f(i):
            time.sleep(3600)
    """)
    with Sandbox(_cfg(timeout_s=20.0, test_timeout_s=20.0, cpu_s=20.0)) as s:
        stop = threading.Event()

        def kill_judges() -> None:  # whenever a judge has run the sleeper for 0.5 s, kill it
            killed = 0
            while killed < 2 and not stop.is_set():
                w = s._workers[0]
                if w.inflight and w.inflight[0][0] == 0 and time.monotonic() - w.inflight[0][1] > 0.5:
                    os.kill(w.proc.pid, signal.SIGKILL)
                    killed += 1
                    while s._workers[0] is w and not stop.is_set():
                        time.sleep(0.01)
                time.sleep(0.02)

        th = threading.Thread(target=kill_judges)
        th.start()
        try:
            results = s.run_many([(sleeper, CALL), (HONEST, CALL), (HONEST, CALL)])
        finally:
            stop.set()
            th.join()
    assert [r.status for r in results] == ["crash", "passed", "passed"]
