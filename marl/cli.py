"""The ``marl`` command: train, evaluate and inspect runs from YAML configs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from marl.config import ConfigError, load_config, peek_yaml_key, to_yaml
from marl.credit.config import RETIRED_KEYS as CREDIT_RETIRED_KEYS

EXAMPLES = """examples:
  marl train configs/single_turn.yaml
  marl train configs/single_turn.yaml run.steps=50 agents.small.optim.lr=3e-3
  marl train --resume runs/single_turn-s0-20261128-101500
  marl eval runs/single_turn-s0-20261128-101500
  marl show-config configs/single_turn.yaml run.seed=3
  marl tournament configs/games/tournament_tictactoe.yaml games_per_pair=100
"""


def _schema_for(config: str | None, resume: str | None, default: str | None = None):
    from marl.recipes import get_recipe

    yaml_paths: list[str] = []
    if resume is not None:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no config.yaml in that folder (is it a run directory?)")
        yaml_paths.append(str(saved))
    if config is not None:
        yaml_paths.append(config)
    if not yaml_paths:
        raise ConfigError("give a CONFIG file or --resume RUN_DIR")
    if not Path(yaml_paths[-1]).is_file():
        raise ConfigError(f"config file not found: {yaml_paths[-1]}")
    recipe_name = peek_yaml_key(yaml_paths[-1], "recipe", default)
    if recipe_name is None:
        raise ConfigError(f"{yaml_paths[-1]}: missing required value 'recipe' (the recipe to run)")
    try:
        recipe = get_recipe(recipe_name)
    except ValueError as exc:
        raise ConfigError(f"{yaml_paths[-1]}: {exc}") from None
    return recipe, recipe_name, yaml_paths


def _load(args, default: str | None = None):
    recipe, name, paths = _schema_for(getattr(args, "config", None), getattr(args, "resume", None), default)
    retired = {**CREDIT_RETIRED_KEYS, **getattr(recipe, "RETIRED_KEYS", {})}
    cfg = load_config(recipe.Config, paths, args.overrides, retired=retired)
    if cfg.recipe != name:
        raise ConfigError(
            f"recipe '{cfg.recipe}' does not match the config file's '{name}': the file's recipe picks the "
            "schema, so change the recipe in the file, not by an override"
        )
    return recipe, name, cfg


def _training_recipe(recipe, name: str, where: str):
    if not hasattr(recipe, "train"):
        raise ConfigError(f"{where}: a '{name}' config is not trained; run it with `marl {name} {where}`")
    return recipe


def cmd_train(args) -> int:
    from marl.runner import Runner

    recipe, name, cfg = _load(args)
    _training_recipe(recipe, name, args.config or args.resume)
    print(to_yaml(cfg))
    runner = Runner(cfg, cfg.run, cfg.recipe, resume=args.resume)
    print(f"run directory: {runner.dir}", flush=True)
    last = recipe.train(cfg, runner)
    summary = {k: round(v, 4) for k, v in last.items() if k.startswith("eval/")}
    print(f"done: {runner.dir}  {json.dumps(summary)}")
    return 0


def cmd_eval(args) -> int:
    from marl.runner import Runner

    run_dir = Path(args.run_dir)
    args.resume = str(run_dir)
    args.config = None
    recipe, name, cfg = _load(args)
    _training_recipe(recipe, name, str(run_dir))
    runner = Runner(cfg, cfg.run, cfg.recipe, resume=run_dir)
    metrics = recipe.evaluate_run(cfg, runner)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_show_config(args) -> int:
    _, _, cfg = _load(args)
    print(to_yaml(cfg))
    return 0


def cmd_tournament(args) -> int:
    args.resume = None
    recipe, name, cfg = _load(args, default="tournament")
    if not hasattr(recipe, "run"):
        raise ConfigError(f"{args.config}: a '{name}' config is trained: `marl train {args.config}`")
    print(to_yaml(cfg))
    print(recipe.run(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marl",
        description="Train several LLM agents together with RL on one shared tree of turns.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train from a YAML config",
        epilog="example:\n  marl train configs/single_turn.yaml run.steps=50 agents.small.optim.lr=3e-3\n"
        "  marl train --resume runs/RUN_DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", nargs="?", help="YAML config (optional with --resume)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. run.seed=3")
    t.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint"
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="evaluate the latest checkpoint of a run",
        epilog="example:\n  marl eval runs/RUN_DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run_dir", help="a run directory written by `marl train`")
    e.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval_prompts=100")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser(
        "show-config",
        help="print the resolved config without running anything",
        epilog="example:\n  marl show-config configs/single_turn.yaml run.seed=3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("config", help="YAML config")
    s.add_argument("overrides", nargs="*", help="key=value overrides")
    s.set_defaults(func=cmd_show_config)

    r = sub.add_parser(
        "tournament",
        help="round robin between players (runs, HF models, random, MCTS, CFR): Elo, cross-table, PNG",
        epilog="example:\n  marl tournament configs/games/tournament_tictactoe.yaml games_per_pair=100\n"
        "  marl tournament configs/games/tournament_tictactoe.yaml "
        "'players=[random,mcts-25,run:runs/tictactoe/*]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("config", help="YAML tournament config (games.tournament.TournamentConfig)")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. games_per_pair=100")
    r.set_defaults(func=cmd_tournament)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
