"""The shared tree of turns: a struct of arrays plus a side list of payloads (as DeepMind ``mctx``).

Every scenario grows one ``TurnTree``: a node is one LLM call (or environment step), the arrays
hold its ids and scalars, ``payloads[i]`` holds its tokens, sampling log-probs and text
(``marl.types.Turn``). Nodes are appended in batches and never removed, and a parent always
exists before its children, so node ids are a topological order. Everything derived (children,
siblings, paths, leaves, roots, subtree aggregates) is computed with array operations: loops run
over tree depth, never over nodes.

Shape legend: ``N`` nodes, ``K`` children, ``B`` episodes.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from marl.types import Turn

if TYPE_CHECKING:  # pragma: no cover
    import networkx

logger = logging.getLogger(__name__)

# field name -> (dtype, default for a new node when not derived)
FIELDS: dict[str, np.dtype] = {
    "parent": np.dtype(np.int64),
    "depth": np.dtype(np.int32),
    "episode": np.dtype(np.int64),
    "agent": np.dtype(np.int32),
    "role": np.dtype(np.int32),
    "turn": np.dtype(np.int32),
    "group": np.dtype(np.int64),
    "state_hash": np.dtype(np.int64),
    "reward": np.dtype(np.float64),
    "terminal": np.dtype(bool),
    "value": np.dtype(np.float64),
    "root": np.dtype(np.int64),
}
# fields usable in a group key (integer ids); "node" is the node id itself
KEY_FIELDS = ("node", "parent", "depth", "episode", "agent", "role", "turn", "group", "state_hash", "root")

_FORMAT_VERSION = 1


def children_csr(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Children of every node in CSR form from a parent array ``(N,)`` (-1 = root): ``order`` holds
    the non-root ids grouped by parent (id order inside a group), the children of ``v`` are
    ``order[offsets[v]:offsets[v + 1]]``."""
    p = np.asarray(parent, dtype=np.int64)
    nonroot = np.flatnonzero(p >= 0)
    order = nonroot[np.argsort(p[nonroot], kind="stable")]  # children grouped by parent, id order
    offsets = np.zeros(p.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(p[nonroot], minlength=p.shape[0]), out=offsets[1:])
    return order, offsets


def depth_levels(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node ids sorted by depth (id order inside a level) and the level bounds: the nodes at depth
    ``d`` are ``order[bounds[d]:bounds[d + 1]]``."""
    d = np.asarray(depth, dtype=np.int64)
    order = np.argsort(d, kind="stable")
    bounds = np.zeros(int(d.max(initial=-1)) + 2, dtype=np.int64)
    np.cumsum(np.bincount(d), out=bounds[1:])
    return order, bounds


def subtree_sum(
    parent: np.ndarray,
    values: np.ndarray,
    *,
    depth: np.ndarray | None = None,
    by_depth: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(N,) sum of ``values`` over each node's subtree (the node included), from the parent array
    (a parent before its children). One vectorised scatter-add per depth level, deepest first; give
    ``depth`` or its ``depth_levels``. Floats stay floats (at least float64), integers int64."""
    p = np.asarray(parent, dtype=np.int64)
    v = np.asarray(values)
    order, bounds = by_depth if by_depth is not None else depth_levels(depth)
    acc = v.astype(np.result_type(v.dtype, np.float64) if v.dtype.kind == "f" else np.int64).copy()
    for d in range(len(bounds) - 2, 0, -1):
        lvl = order[bounds[d] : bounds[d + 1]]
        np.add.at(acc, p[lvl], acc[lvl])
    return acc


class TurnTree:
    """Struct-of-arrays tree of turns.

    Array fields (all length ``N`` read-only views; mutate through the ``set_*`` methods):
    ``parent`` (int64, -1 for a root), ``depth`` (int32), ``episode`` (int64), ``agent`` (int32,
    index into ``agent_names``, -1 = no agent, e.g. a prompt/environment root), ``role`` (int32),
    ``turn`` (int32), ``group`` (int64, a free scenario group id such as the prompt id),
    ``state_hash`` (int64), ``reward`` (float64, NaN = unset), ``terminal`` (bool), ``value``
    (float64, NaN = unset). ``payloads[i]`` is the node's ``Turn`` or ``None``.
    """

    def __init__(self, agent_names: Sequence[str] = ()) -> None:
        self.agent_names: list[str] = []
        self._agent_ids: dict[str, int] = {}
        for name in agent_names:
            self.agent_index(name)
        self.payloads: list[Turn | None] = []
        self._n = 0
        self._cap = 0
        self._data: dict[str, np.ndarray] = {f: np.zeros(0, dt) for f, dt in FIELDS.items()}
        self._next_episode = 0
        self._cache: dict[str, Any] = {}
        self._cache_n = -1

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"TurnTree(nodes={self._n}, roots={int((self.parent < 0).sum())}, agents={self.agent_names})"

    def _view(self, name: str) -> np.ndarray:
        v = self._data[name][: self._n]
        v.flags.writeable = False
        return v

    parent = property(lambda self: self._view("parent"), doc="(N,) int64 parent id, -1 for a root")
    depth = property(lambda self: self._view("depth"), doc="(N,) int32 depth, 0 for a root")
    episode = property(lambda self: self._view("episode"), doc="(N,) int64 episode id")
    agent = property(lambda self: self._view("agent"), doc="(N,) int32 agent index, -1 = none")
    role = property(lambda self: self._view("role"), doc="(N,) int32 role id")
    turn = property(lambda self: self._view("turn"), doc="(N,) int32 turn index")
    group = property(lambda self: self._view("group"), doc="(N,) int64 scenario group id")
    state_hash = property(lambda self: self._view("state_hash"), doc="(N,) int64 observation hash")
    reward = property(lambda self: self._view("reward"), doc="(N,) float64 reward, NaN = unset")
    terminal = property(lambda self: self._view("terminal"), doc="(N,) bool terminal flag")
    value = property(lambda self: self._view("value"), doc="(N,) float64 value estimate, NaN = unset")

    def field(self, name: str) -> np.ndarray:
        """A field by name, incl. the derived ``node`` (ids) and ``root`` (root id of each node)."""
        if name == "node":
            return np.arange(self._n, dtype=np.int64)
        if name not in FIELDS:
            raise KeyError(f"unknown TurnTree field {name!r}; valid fields: {sorted([*FIELDS, 'node'])}")
        return self._view(name)

    def agent_index(self, name: str) -> int:
        """Index of an agent name, registering it if new."""
        if not isinstance(name, str):
            raise TypeError(f"agent names are strings, got {name!r}")
        if name not in self._agent_ids:
            self._agent_ids[name] = len(self.agent_names)
            self.agent_names.append(name)
        return self._agent_ids[name]

    # ------------------------------------------------------------------ growth
    def _reserve(self, n_new: int) -> None:
        need = self._n + n_new
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 16)
        for f, arr in self._data.items():
            new = np.zeros(cap, dtype=arr.dtype)
            new[: self._n] = arr[: self._n]
            self._data[f] = new
        self._cap = cap

    def _agents_to_ids(self, agent: Any, n: int) -> np.ndarray:
        if isinstance(agent, str):
            return np.full(n, self.agent_index(agent), dtype=np.int32)
        a = np.asarray(agent)
        if a.dtype.kind in "UO" or (a.dtype.kind == "S"):
            flat = a.reshape(-1)
            out = np.empty(flat.shape[0], dtype=np.int32)
            for name in dict.fromkeys(flat.tolist()):  # loop over distinct names, not nodes
                idx = -1 if name is None else (self.agent_index(name) if isinstance(name, str) else int(name))
                out[flat == name] = idx
            a = out.reshape(a.shape)
        elif a.dtype.kind not in "iub":
            raise TypeError(f"agent must be ints or names, got dtype {a.dtype}")
        a = np.broadcast_to(a, (n,)).astype(np.int32)
        bad = (a < -1) | (a >= len(self.agent_names))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"agent index {int(a[i])} (new node {i}) is not in [-1, {len(self.agent_names)}); "
                f"known agents: {self.agent_names}. Pass a name to register a new agent."
            )
        return a

    def add_nodes(
        self,
        parent: int | Sequence[int] | np.ndarray,
        *,
        agent: int | str | Sequence[Any] | np.ndarray = -1,
        role: int | Sequence[int] | np.ndarray = 0,
        episode: int | Sequence[int] | np.ndarray | None = None,
        turn: int | Sequence[int] | np.ndarray | None = None,
        group: int | Sequence[int] | np.ndarray | None = None,
        state_hash: int | Sequence[int] | np.ndarray = 0,
        reward: float | Sequence[float] | np.ndarray = np.nan,
        terminal: bool | Sequence[bool] | np.ndarray = False,
        value: float | Sequence[float] | np.ndarray = np.nan,
        payloads: Turn | Sequence[Turn | None] | None = None,
    ) -> np.ndarray:
        """Append a batch of nodes (mutates); scalars broadcast. Returns the new ids ``(n,)`` int64.

        ``parent`` must name existing nodes (-1 = a new root). Defaults: ``episode`` and ``group``
        are the parent's (a root gets a fresh episode id and ``group`` = its own id); ``turn`` is
        the parent's + 1 (a root: 0); ``depth`` is always the parent's + 1. ``agent`` may be ints
        or names (a new name is registered). ``reward`` may be NaN (unset) but not infinite.
        """
        args = {
            "parent": parent,
            "agent": agent,
            "role": role,
            "episode": episode,
            "turn": turn,
            "group": group,
            "state_hash": state_hash,
            "reward": reward,
            "terminal": terminal,
            "value": value,
        }
        if isinstance(payloads, Turn):
            payloads = [payloads]
        lengths = {
            k: len(np.asarray(v))
            for k, v in args.items()
            if v is not None and not isinstance(v, str) and np.ndim(v) == 1
        }
        if payloads is not None:
            lengths["payloads"] = len(payloads)
        for k, v in args.items():
            if v is not None and not isinstance(v, str) and np.ndim(v) > 1:
                raise ValueError(f"add_nodes: {k} must be a scalar or 1-D, got shape {np.shape(v)}")
        sizes = set(lengths.values())
        if len(sizes) > 1:
            raise ValueError(
                f"add_nodes: argument lengths disagree: {lengths}; pass scalars or equal lengths"
            )
        n = sizes.pop() if sizes else 1
        base = self._n

        par = np.broadcast_to(np.asarray(parent, dtype=np.int64), (n,))
        bad = (par < -1) | (par >= base)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"parent {int(par[i])} of new node {base + i} does not exist (tree has {base} nodes); "
                "add parents before their children (-1 makes a root)"
            )
        ag = self._agents_to_ids(agent, n)
        rew = np.broadcast_to(np.asarray(reward, dtype=np.float64), (n,))
        if np.isinf(rew).any():
            i = int(np.flatnonzero(np.isinf(rew))[0])
            raise ValueError(
                f"reward of new node {base + i} is {rew[i]}; rewards must be finite (NaN = unset)"
            )
        val = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
        if np.isinf(val).any():
            raise ValueError("add_nodes: value must be finite or NaN (unset)")

        is_root = par < 0
        ids = np.arange(base, base + n, dtype=np.int64)
        pp = np.where(is_root, 0, par)  # safe gather index (roots are overwritten below)
        self._reserve(n)
        d = self._data
        sl = slice(base, base + n)

        d["parent"][sl] = par
        d["depth"][sl] = np.where(is_root, 0, d["depth"][pp] + 1)
        d["root"][sl] = np.where(is_root, ids, d["root"][pp])
        if episode is None:
            fresh = self._next_episode + np.cumsum(is_root) - 1
            d["episode"][sl] = np.where(is_root, fresh, d["episode"][pp])
            self._next_episode += int(is_root.sum())
        else:
            ep = np.broadcast_to(np.asarray(episode, dtype=np.int64), (n,))
            d["episode"][sl] = ep
            if n:
                self._next_episode = max(self._next_episode, int(ep.max()) + 1)
        if turn is None:
            d["turn"][sl] = np.where(is_root, 0, d["turn"][pp] + 1)
        else:
            d["turn"][sl] = np.broadcast_to(np.asarray(turn, dtype=np.int32), (n,))
        if group is None:
            d["group"][sl] = np.where(is_root, ids, d["group"][pp])
        else:
            d["group"][sl] = np.broadcast_to(np.asarray(group, dtype=np.int64), (n,))
        d["agent"][sl] = ag
        d["role"][sl] = np.broadcast_to(np.asarray(role, dtype=np.int32), (n,))
        d["state_hash"][sl] = np.broadcast_to(np.asarray(state_hash, dtype=np.int64), (n,))
        d["reward"][sl] = rew
        d["terminal"][sl] = np.broadcast_to(np.asarray(terminal, dtype=bool), (n,))
        d["value"][sl] = val

        if payloads is None:
            self.payloads.extend([None] * n)
        else:
            for j, p in enumerate(payloads):
                if p is not None and not isinstance(p, Turn):
                    raise TypeError(
                        f"payload of new node {base + j} is {type(p).__name__}, expected Turn or None"
                    )
            self.payloads.extend(payloads)
        self._n = base + n
        return ids

    def _ids(self, ids: Any) -> np.ndarray:
        a = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        bad = (a < 0) | (a >= self._n)
        if bad.any():
            raise IndexError(f"node id {int(a[np.flatnonzero(bad)[0]])} is not in [0, {self._n})")
        return a

    def set_reward(self, ids: Any, rewards: Any) -> None:
        """Set rewards (mutates); a NaN or infinite reward is rejected with the node id."""
        a = self._ids(ids)
        r = np.broadcast_to(np.asarray(rewards, dtype=np.float64), a.shape)
        bad = ~np.isfinite(r)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"reward for node {int(a[i])} is {r[i]}; rewards must be finite")
        self._data["reward"][a] = r

    def set_value(self, ids: Any, values: Any) -> None:
        """Set value estimates (mutates); must be finite."""
        a = self._ids(ids)
        v = np.broadcast_to(np.asarray(values, dtype=np.float64), a.shape)
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ValueError(f"value for node {int(a[i])} is {v[i]}; values must be finite")
        self._data["value"][a] = v

    def set_terminal(self, ids: Any, terminal: Any = True) -> None:
        """Mark nodes terminal (mutates)."""
        a = self._ids(ids)
        self._data["terminal"][a] = np.broadcast_to(np.asarray(terminal, dtype=bool), a.shape)

    def set_payload(self, i: int, payload: Turn | None) -> None:
        """Attach or replace one node's payload (mutates)."""
        (i,) = self._ids(i)
        if payload is not None and not isinstance(payload, Turn):
            raise TypeError(f"payload must be a Turn or None, got {type(payload).__name__}")
        self.payloads[int(i)] = payload

    # ------------------------------------------------------------------ derived (cached per size)
    def _cached(self, key: str, build: Any) -> Any:
        if self._cache_n != self._n:
            self._cache = {}
            self._cache_n = self._n
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _children_csr(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cached("csr", lambda: children_csr(self.parent))

    def num_children(self) -> np.ndarray:
        """(N,) number of children of every node."""
        _, offsets = self._children_csr()
        return np.diff(offsets)

    def children(self, i: int) -> np.ndarray:
        """Children of node ``i`` in id order, shape ``(K,)``."""
        (i,) = self._ids(i)
        order, offsets = self._children_csr()
        return order[offsets[i] : offsets[i + 1]].copy()

    def siblings(self, i: int) -> np.ndarray:
        """The other children of ``i``'s parent (id order); a root has no siblings."""
        (i,) = self._ids(i)
        p = int(self.parent[i])
        if p < 0:
            return np.zeros(0, dtype=np.int64)
        c = self.children(p)
        return c[c != i]

    def paths(self, ids: Any) -> np.ndarray:
        """Root-to-node paths of several nodes at once: ``(len(ids), max_depth + 1)`` padded with -1
        on the right. One vectorised step per depth level."""
        a = self._ids(ids)
        depth = self.depth[a].astype(np.int64)
        width = int(depth.max()) + 1 if a.size else 0
        out = np.full((a.size, width), -1, dtype=np.int64)
        cur = a.copy()
        rows = np.arange(a.size)
        for step in range(width):
            col = depth - step
            alive = col >= 0
            out[rows[alive], col[alive]] = cur[alive]
            cur = np.where(alive, self.parent[np.maximum(cur, 0)], -1)
        return out

    def path(self, i: int) -> np.ndarray:
        """Node ids from the root down to ``i`` (inclusive)."""
        row = self.paths([i])[0]
        return row[row >= 0]

    def leaves(self) -> np.ndarray:
        """Ids of nodes without children."""
        return np.flatnonzero(self.num_children() == 0)

    def roots(self) -> np.ndarray:
        """Ids of root nodes (parent -1)."""
        return np.flatnonzero(self.parent < 0)

    def root_of(self) -> np.ndarray:
        """(N,) the root id of every node (maintained on append)."""
        return self._view("root")

    def _by_depth(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cached("by_depth", lambda: depth_levels(self.depth))

    def subtree_sum(self, values: Any) -> np.ndarray:
        """(N,) sum of ``values`` over each node's subtree (the node included). One vectorised
        scatter-add per depth level, deepest first."""
        v = np.asarray(values)
        if v.shape != (self._n,):
            raise ValueError(f"subtree_sum: values must have shape ({self._n},), got {v.shape}")
        return subtree_sum(self.parent, v, by_depth=self._by_depth())

    def subtree_size(self) -> np.ndarray:
        """(N,) number of nodes in each node's subtree (itself included)."""
        return self.subtree_sum(np.ones(self._n, dtype=np.int64))

    def has_payload(self) -> np.ndarray:
        """(N,) bool: whether the node carries a payload."""
        return np.fromiter((p is not None for p in self.payloads), dtype=bool, count=self._n)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the tree to one ``.npz`` file (arrays + concatenated payload tokens; payload ``data``
        dicts are pickled, so load only trees you wrote)."""
        n = self._n
        has = self.has_payload()
        pl = [p for p in self.payloads if p is not None]

        def cat(attr: str, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
            arrs = [np.asarray(getattr(p, attr), dtype=dtype).reshape(-1) for p in pl]
            lens = np.array([a.shape[0] for a in arrs], dtype=np.int64)
            flat = np.concatenate(arrs) if arrs else np.zeros(0, dtype)
            return flat, lens

        prompt, prompt_len = cat("prompt_ids", np.int32)
        comp, comp_len = cat("completion_ids", np.int32)
        lp, lp_len = cat("logprobs", np.float32)
        texts = [p.text.encode("utf-8") for p in pl]
        text_len = np.array([len(t) for t in texts], dtype=np.int64)
        text_blob = np.frombuffer(b"".join(texts), dtype=np.uint8)
        fin = [p.finish_reason for p in pl]
        data_blob = np.frombuffer(pickle.dumps([p.data for p in pl], protocol=4), dtype=np.uint8)
        arrays = {f"f_{f}": self._data[f][:n] for f in FIELDS}
        buf = io.BytesIO()
        np.savez(
            buf,
            version=np.array(_FORMAT_VERSION),
            agent_names=np.array(self.agent_names, dtype=str),
            next_episode=np.array(self._next_episode),
            has_payload=has,
            prompt=prompt,
            prompt_len=prompt_len,
            comp=comp,
            comp_len=comp_len,
            lp=lp,
            lp_len=lp_len,
            text_blob=text_blob,
            text_len=text_len,
            finish=np.array(fin, dtype=str),
            data_blob=data_blob,
            **arrays,
        )
        with open(path, "wb") as fh:
            fh.write(buf.getvalue())
        logger.debug("saved TurnTree with %d nodes to %s", n, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TurnTree:
        """Read a tree written by ``save``."""
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: TurnTree format {int(z['version'])}, expected {_FORMAT_VERSION}")
            tree = cls([str(s) for s in z["agent_names"]])
            n = int(z["f_parent"].shape[0])
            tree._reserve(n)
            for f in FIELDS:
                tree._data[f][:n] = z[f"f_{f}"]
            tree._n = n
            tree._next_episode = int(z["next_episode"])
            has = z["has_payload"]

            def split(flat: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
                return np.split(flat, np.cumsum(lens)[:-1]) if lens.size else []

            prompts = split(z["prompt"], z["prompt_len"])
            comps = split(z["comp"], z["comp_len"])
            lps = split(z["lp"], z["lp_len"])
            blob = z["text_blob"].tobytes()
            ends = np.cumsum(z["text_len"])
            starts = ends - z["text_len"]
            fins = [str(s) for s in z["finish"]]
            datas = pickle.loads(z["data_blob"].tobytes())
        payloads: list[Turn | None] = [None] * n
        for j, i in enumerate(np.flatnonzero(has)):
            payloads[int(i)] = Turn(
                prompt_ids=prompts[j].copy(),
                completion_ids=comps[j].copy(),
                logprobs=lps[j].copy(),
                text=blob[starts[j] : ends[j]].decode("utf-8"),
                finish_reason=fins[j],
                data=datas[j],
            )
        tree.payloads = payloads
        return tree

    def to_networkx(self) -> networkx.DiGraph:
        """A ``networkx.DiGraph`` for inspection: node attributes are the fields (agent as its name)
        plus ``text`` when a payload exists; edges go parent -> child."""
        import networkx as nx

        g = nx.DiGraph()
        cols = {f: self._data[f][: self._n].tolist() for f in FIELDS if f != "parent"}
        names = self.agent_names
        for i in range(self._n):
            attrs = {f: cols[f][i] for f in cols}
            attrs["agent_name"] = names[attrs["agent"]] if attrs["agent"] >= 0 else None
            p = self.payloads[i]
            if p is not None:
                attrs["text"] = p.text
            g.add_node(i, **attrs)
        par = self.parent
        nonroot = np.flatnonzero(par >= 0)
        g.add_edges_from(zip(par[nonroot].tolist(), nonroot.tolist()))
        return g
