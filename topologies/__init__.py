"""Topology experiments: learn who talks to whom in a team of agents.

A run declares a team, a task with verifiable answers and a topology method in one YAML
(``configs/topologies/``, recipe ``topology``). Each step the topology policy samples K
communication graphs per query (``topologies.graphs``: candidate edges under a role-order mask, so
every graph is a DAG; spatial edges inside a round, temporal edges from round t-1 to t), the team
runs over all of them in batched waves (``topologies.execution``: one call per agent per wave across
every graph and query), each graph is scored, the core's credit rule turns the scores into
advantages on the graph nodes of the ``TurnTree`` (``marl.credit.graphs``: Graph-GRPO graph and edge
level, REINFORCE without baseline, the token-cost utility u = score - lambda * tokens), and the
policy learns with its own optimizer (``topologies.learner``).

Methods (one config each): Graph-GRPO edge level (``graph_grpo.yaml``), graph level
(``graph_grpo_graph.yaml``), edge level with token cost (``graph_grpo_cost.yaml``), G-Designer-style
REINFORCE with a query-conditioned policy (``gdesigner.yaml``), GPTSwarm and AgentPrune with free
edge logits (``gptswarm.yaml``, ``agentprune.yaml``, with one-shot pruning), and the fixed
topologies chain, star (hub-and-spoke), layered, complete, random, debate and single agent
(``fixed_*.yaml``).

The task today is the skill-chain testbed (``topologies.testbed``): programmatic agents that are
reliable at different skills, queries that need skills in a query-specific order, and an exact
oracle. ``benchmarks/bench_topologies.py`` trains every method over seeds and prints one table
(``benchmarks/results/topologies.md``). Run one method::

    python -m marl.cli train configs/topologies/graph_grpo.yaml

See ``docs/topologies.md`` for what is built, what it reaches and what is missing.
"""
