"""Search tree export: JSON record and PNG picture."""

import json

import numpy as np

from marl.tree import TurnTree
from marl.types import Turn
from search.export import draw_tree, layout, save_tree_json, tree_to_dict


def _tree() -> TurnTree:
    t = TurnTree(["small", "large"])
    t.add_nodes(-1)  # 0: task
    t.add_nodes(-1)  # 1: another task (must not leak into tree 0's export)

    def turn(prog, status, fails):
        return Turn(
            np.zeros(3, np.int32),
            np.zeros(2, np.int32),
            np.zeros(2, np.float32),
            text=prog,
            data={"program": prog, "action": "generate", "status": status, "failures": fails},
        )

    t.add_nodes(
        [0, 0],
        agent=["small", "large"],
        reward=[0.5, 1.0],
        payloads=[
            turn("p2", "failed", [("public[0]", "f(1) returned 2, expected 3")]),
            turn("p3", "passed", []),
        ],
    )  # 2, 3
    t.add_nodes(2, agent="large", reward=0.0, payloads=[turn("p4", "error", [("public[0]", "boom")])])  # 4
    return t


def test_tree_to_dict_and_json(tmp_path):
    t = _tree()
    d = tree_to_dict(t, 0)
    assert [n["id"] for n in d["nodes"]] == [0, 2, 3, 4]
    assert d["nodes"][0]["agent"] is None and d["nodes"][0]["reward"] is None
    assert d["nodes"][1]["agent"] == "small" and d["nodes"][1]["failures"] == [
        ["public[0]", "f(1) returned 2, expected 3"]
    ]
    assert d["nodes"][3]["parent"] == 2 and d["nodes"][3]["depth"] == 2
    p = save_tree_json(t, 0, tmp_path / "t.json")
    assert json.loads(p.read_text()) == json.loads(json.dumps(d))


def test_layout_centres_parents():
    t = _tree()
    pos = layout(t.parent, np.array([0, 2, 3, 4]))
    # leaves in depth-first order: 4 (x 0), 3 (x 1); node 2 sits over its only child 4; root over 2 and 3
    assert pos[4] == (0.0, -2.0) and pos[3] == (1.0, -1.0) and pos[2] == (0.0, -1.0)
    assert pos[0] == (0.5, 0.0)


def test_draw_tree_writes_a_png(tmp_path):
    p = draw_tree(_tree(), 0, tmp_path / "t.png", title="demo")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
