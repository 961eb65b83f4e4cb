"""A Hugging Face model from a local directory, with LoRA, trains in the single-turn recipe;
only the adapter weights change."""

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from marl.rundir import read_metrics
from tests.cli_helpers import cli_env, run_train, save_tiny_hf_model, train_cmd


def test_lora_on_local_hf_model_trains_only_adapters(tmp_path):
    model_dir = save_tiny_hf_model(tmp_path / "llama", layers=2, tie=False)
    yaml = tmp_path / "lora.yaml"
    yaml.write_text(f"""
recipe: single_turn
agents:
  lora:
    policy: {{path: {model_dir}, lora: {{enabled: true, r: 4, alpha: 8}}}}
    optim: {{lr: 1.0e-2}}
    sampling: {{max_new_tokens: 2}}
""")
    overrides = [
        "run.steps=3",
        "run.progress=false",
        "run.tensorboard=false",
        "run.threads=1",
        "run.plots=false",
    ]
    overrides += ["prompts_per_step=4", "group_size=4", "eval_prompts=8"]
    run_train(train_cmd(yaml, tmp_path, "r", overrides), cli_env())
    rows = read_metrics(tmp_path / "r")
    assert rows[-1]["step"] == 3 and "agent/lora/loss" in rows[-1]
    trained = load_file(
        tmp_path / "r" / "checkpoints" / "step_0000003" / "agents" / "lora" / "model.safetensors"
    )
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    adapters = {k: v for k, v in trained.items() if "lora_" in k}
    assert adapters, "no LoRA weights in the checkpoint"
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters.items()), "adapters did not train"
    n_base = 0
    for k, v in trained.items():
        if "lora_" in k:
            continue
        name = k.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(v, base[name]), f"base weight {name} changed"
        n_base += 1
    assert n_base >= len(base) - 1  # every base weight checked (lm_head may be tied in some layouts)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "r" / "export" / "lora")
    assert merged.num_parameters() == sum(v.numel() for v in base.values())
