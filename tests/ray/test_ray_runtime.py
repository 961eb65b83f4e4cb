"""The Ray tier (``pytest -m ray``, README "Ray tier"): a two-node Ray cluster on loopback (a head and
one worker node, each started by this module with ``ray start --block`` and stopped by its pid), the
single-turn recipe with two agents whose learner actors are pinned to different nodes
(``STRICT_SPREAD``): the same seed gives the same metrics as the local runtime, line for line; a killed
learner actor is reported with the agent's name; a run killed mid-step resumes from its checkpoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from marl.config import load_config  # noqa: E402
from marl.distributed import AgentActorError, RaySettings, make_ray_agents  # noqa: E402
from marl.recipes.single_turn import SingleTurnConfig  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402
from tests.cli_helpers import cli_env, deterministic, kill_after_checkpoint, resume, run_train, train_cmd  # noqa: E402

pytestmark = pytest.mark.ray

CONFIG = """
recipe: single_turn
run: {seed: 3, steps: 3, checkpoint_every: 1, eval_every: 1, threads: 1, progress: false, tensorboard: false}
agents:
  small:
    engine: hf
    policy: {tiny: 100k, seed: 1}
    optim: {lr: 3.0e-3}
    sampling: {max_new_tokens: 4}
  other:
    engine: hf
    policy: {tiny: 100k, seed: 2, num_layers: 1}
    optim: {lr: 1.0e-3}
    sampling: {max_new_tokens: 4}
prompts_per_step: 4
group_size: 4
eval_prompts: 8
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node on 127.0.0.1, one CPU each; yields the head's address."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="mr-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    head = subprocess.Popen(
        [_ray_cli(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", f"--temp-dir={temp}", *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    procs = [head]
    try:
        deadline = time.time() + 120
        worker = None
        while time.time() < deadline:
            time.sleep(2)
            if worker is None:
                worker = subprocess.Popen(
                    [_ray_cli(), "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                procs.append(worker)
            probe = subprocess.run(
                [sys.executable, "-c", f"import ray; ray.init(address='{address}', log_to_driver=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))"],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if probe.stdout.strip().endswith("2"):
                break
        else:
            pytest.fail("the two-node Ray cluster did not come up in 120 s")
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _env() -> dict[str, str]:
    return {**cli_env(), "RAY_AUTH_MODE": "disabled"}


def _ray_overrides(address: str) -> list[str]:
    return ["run.runtime=ray", f"run.ray.address={address}", "run.ray.strategy=STRICT_SPREAD"]


def test_ray_runtime_on_two_nodes_gives_the_local_metrics(cluster, tmp_path):
    yaml = tmp_path / "two.yaml"
    yaml.write_text(CONFIG)
    cache = tmp_path / "cache"
    run_train(train_cmd(yaml, tmp_path, "local", cache_dir=cache), _env())
    run_train(train_cmd(yaml, tmp_path, "ray", _ray_overrides(cluster), cache_dir=cache), _env())
    local, remote = (
        deterministic(read_metrics(tmp_path / "local")),
        deterministic(read_metrics(tmp_path / "ray")),
    )
    assert len(local) == 4 and local == remote  # steps 0..3, every metric equal
    assert (tmp_path / "ray" / "export" / "small" / "config.json").is_file()


def test_actors_pinned_to_different_nodes_and_a_killed_learner_is_named(cluster, tmp_path):
    cfg = load_config(SingleTurnConfig, [_write(tmp_path, CONFIG)], [f"run.ray.address={cluster}"])
    os.environ["RAY_AUTH_MODE"] = "disabled"
    settings = RaySettings(address=cluster, strategy="STRICT_SPREAD")
    try:
        agents = make_ray_agents(
            cfg.agents, settings=settings, cache_dir=tmp_path / "c", total_steps=1, seed=0
        )
        nodes = {name: a.node_id() for name, a in agents.items()}
        assert len(set(nodes.values())) == 2, nodes
        prompts = [agents["other"].policy.encode("12+3")]
        assert agents["other"].act(prompts).tokens.shape[0] == 1
        ray.kill(agents["other"].actor)
        with pytest.raises(AgentActorError, match="agent other: its Ray learner actor died during act"):
            agents["other"].act(prompts)
        assert agents["small"].act(prompts).tokens.shape[0] == 1  # the other agent's actor lives on
    finally:
        ray.shutdown()


def test_ray_run_killed_mid_run_resumes_with_the_same_metrics(cluster, tmp_path):
    yaml = _write(tmp_path, CONFIG)
    cache = tmp_path / "cache"
    over = _ray_overrides(cluster)
    run_train(train_cmd(yaml, tmp_path, "full", over, cache_dir=cache), _env())
    cmd = train_cmd(yaml, tmp_path, "killed", over, cache_dir=cache)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    killed_at = kill_after_checkpoint(cmd, latest, {"step_0000001", "step_0000002"}, 600, _env())
    assert killed_at in ("step_0000001", "step_0000002")
    resume(tmp_path / "killed", _env())
    assert deterministic(read_metrics(tmp_path / "killed")) == deterministic(read_metrics(tmp_path / "full"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p
