"""A sandbox that untrusted programs cannot fool: isolated processes, a verdict they cannot forge.

``Sandbox(SandboxConfig())`` runs programs against ``search.tasks.CodeTask``
tests and returns per-test results (``ExecResult``/``TestResult``: passed,
failed with the assertion and the call, error with the program's traceback,
timeout, crash, and the captured output) that feed rewards and refinement
prompts::

    with Sandbox(SandboxConfig(workers=2)) as sb:
        results = sb.run_many([(program, task), ...], which="public")
        rewards = [r.fraction for r in results]

How it is built (details in each module):

* ``pool``: the API; ``workers`` judge processes, jobs kept in flight.
* ``judge``: the judge, a trusted process per worker that holds the expected
  outputs and runs assertion code, calling the program as a remote function;
  the threat model and its limits are written there. It is built from
  ``child`` (the judge's end of one untrusted process), ``zygote_client``
  (starts the zygote, takes its ready children), ``calls`` (calls sent ahead,
  the ``candidate`` proxy) and ``compare`` (output comparison: call results,
  stdout).
* ``zygote``: the zygote process: isolation (a new root that shows only the
  system and the Python installation, namespaces, no network, unprivileged
  uids, rlimits) and the untrusted harness; the threat model of the programs'
  side is written there. With it: ``hidden`` (the answer keys that must stay
  out of sight), ``cgroup`` (one memory bound per program),
  ``syscall_filter`` (the seccomp filter: no namespaces, no other cores).
* ``wire``: the only data that crosses (plain values as tagged JSON), and the
  bounds on decoding it.

Isolation needs root on Linux ("full"); elsewhere it falls back to "rlimit"
(limits, the seccomp filter and a process-group kill, no network or filesystem
isolation), with a warning. ``Sandbox.memory_bound`` says whether a program's
memory is bounded as a whole (a cgroup) or per process. The verdict protocol
is the same in both modes, but under "rlimit" a program runs with your uid and
could attack the judge process itself (signal or ptrace it): use "full" for
code you do not trust.
"""

from search.sandbox.compare import outputs_match, stdout_matches
from search.sandbox.pool import (
    ExecResult,
    Sandbox,
    SandboxConfig,
    TestResult,
    default_hidden_paths,
    full_isolation_available,
)

__all__ = [
    "ExecResult",
    "Sandbox",
    "SandboxConfig",
    "TestResult",
    "default_hidden_paths",
    "full_isolation_available",
    "outputs_match",
    "stdout_matches",
]
