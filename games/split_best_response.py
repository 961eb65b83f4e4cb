"""The exact best response against a frozen Trust-and-Split player (the exploitability probe of
issue 17, computed instead of trained), and the player's exact self-play value.

A player of ``games.dilemmas.TrustAndSplit`` (press) sees the round, its hand, the co-player's claim
this round once made, and the last round (``TrustAndSplit.observation``). The LM policies and the
memory-one fixed strategies (``fair``, ``reciprocal``, always-*) act on nothing else, so against them
a best response needs only (round, last round) plus what it sees within the round, and backward
induction over those states is exact. ``L`` is a finished round in seat order: hand pair, the two
claims, the two keeps (6 * 3 * 3 * (coins + 1)^2 states; ``None`` before round 1).

Round ``r`` from state ``L``, exploiter in seat ``e``, the frozen player ``m = 1 - e``: the hand pair
is uniform over the 6 ordered pairs of different hands (so the exploiter's hand ``x`` is uniform and
the player's ``h`` uniform over the other two). With ``pi_c(c | h, said)`` the player's claim
distribution (``said``: the exploiter's claim, or ``-`` when the player speaks first) and
``pi_k(k | h, said, own claim)`` its keep distribution, both at (r, L)::

    Q(x, h, c_x, c_h, k_x) = sum_k pi_k(k | h, c_x, c_h) [pay_x(k_x, k) + V_{r+1}(L')]
    exploiter speaks first:  V_r(L) = 1/3 sum_x max_{c_x} sum_{c_h} max_{k_x} 1/2 sum_h pi_c(c_h | h, c_x) Q
    player speaks first:     V_r(L) = 1/3 sum_x sum_{c_h} max_{c_x} max_{k_x} 1/2 sum_h pi_c(c_h | h, -) Q

The max over ``k_x`` is taken per information set (own hand, both claims): the exploiter does not see
the player's hand, and weighting by ``pi_c`` is its posterior. The player's value under the best
response follows the same choices. **Exploitability** = mean over both seats of ``V_0`` minus the
player's self-play share: half of its exact expected collective return against itself (the same
recursion with the player in both seats and no max). No exploiter is trained, so the value is exact
for the player as it samples (temperature, constrained to legal actions) and does not depend on an
exploiter's learning rate or budget; ``games.dilemma_exploiter`` trains one instead, for any game and
any player, as a lower bound.

LM probabilities are those of constrained sampling (``games.prompts.legal_action_token_mask``, eos
the only stop, ``softmax(logits / T)`` over the allowed tokens at each step, top-p 1): each legal
action's token path through the trie, eos included, scored by the model (``action_probs``).

CLI (a self-play run of ``trust_and_split``; about 10 to 30 minutes for the 300k LM on one core)::

    python -m games.split_best_response RUN_DIR [--json OUT]

Shape legend: ``S`` states of a round, ``K`` keeps (coins + 1), ``H`` hands (3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from games.dilemmas import HANDS, TrustAndSplit, dilemma_params, rps_winner, split_payoffs
from games.league import decision_prompt, encode_prompts

MEMORY_ONE = {"always-cooperate", "always-defect", "tit-for-tat", "fair", "reciprocal"}
"""Fixed strategies that read at most the last round (grim-trigger reads all; honest draws)."""
PAIRS = [(a, b) for a in HANDS for b in HANDS if a != b]  # the 6 ordered hand pairs, seat order


# ------------------------------------------------------------------------------ the player's moves
class _ForceAndRecord:
    """Logits processor that walks each row down one forced token path and records, at every node
    of the path with more than one allowed token, ``log_softmax(logits / T)`` over those tokens."""

    def __init__(
        self, paths: list[tuple[int, ...]], allowed: list[list[list[int] | None]], temperature: float
    ):
        self.paths, self.allowed, self.t = paths, allowed, temperature
        self.logp: list[list[dict[int, float] | None]] = [[None] * len(p) for p in paths]

    def __call__(self, step: int, toks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(logits, float("-inf"))
        lg = logits.float() / self.t
        for b, path in enumerate(self.paths):
            if step >= len(path):
                out[b, 0] = 0.0  # finished row: anything (ignored)
                continue
            nxt = self.allowed[b][step]
            if nxt is not None:
                lp = torch.log_softmax(lg[b, nxt], -1).tolist()
                self.logp[b][step] = dict(zip(nxt, lp))
            out[b, path[step]] = 0.0
        return out


def action_probs(
    policy,
    prompts: Sequence[str | list[dict]],
    legal: Sequence[Sequence[str]],
    *,
    temperature: float = 1.0,
    batch_size: int = 4096,
    max_new_tokens: int | None = None,
) -> list[dict[str, float]]:
    """P(action) of each legal action under constrained sampling (module doc), per prompt: the
    policy's own ``generate`` (its fast decoder), forced down a few token paths that together pass
    every trie node with a choice, records the masked distribution at those nodes. ``max_new_tokens``
    (the sampler's): refuse actions that, with eos, do not fit in it (their sampling is cut short)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (greedy play is deterministic), got {temperature}")
    prompt_ids = encode_prompts(policy, list(prompts))
    eos = policy.eos_id
    cache: dict[str, tuple[int, ...]] = {}
    rows: list[tuple[int, tuple[int, ...], list[list[int] | None]]] = []  # (prompt, path, choices)
    seqs_of: list[dict[str, tuple[int, ...]]] = []
    for i, acts in enumerate(legal):
        seqs = {}
        for a in acts:
            if a not in cache:
                cache[a] = tuple(policy.tokenizer.encode(a, add_special_tokens=False))
            seqs[a] = cache[a] + (eos,)
        if len(set(seqs.values())) != len(seqs):
            raise ValueError(f"legal actions {list(acts)} do not encode to distinct tokens")
        seqs_of.append(seqs)
        if max_new_tokens is not None and max(len(q) for q in seqs.values()) > max_new_tokens:
            raise ValueError(
                f"max_new_tokens {max_new_tokens} cuts the actions {list(acts)} short (with eos up to "
                f"{max(len(q) for q in seqs.values())} tokens): sampling differs from the exact one"
            )
        nodes: dict[tuple[int, ...], set[int]] = {}
        for q in seqs.values():
            for t in range(len(q)):
                nodes.setdefault(q[:t], set()).add(q[t])
        todo = {pre for pre, nxt in nodes.items() if len(nxt) > 1}
        for q in sorted(seqs.values(), key=len, reverse=True):  # paths until every choice is passed
            if not todo:
                break
            passed = {q[:t] for t in range(len(q))} & todo
            if passed:
                todo -= passed
                rows.append(
                    (i, q, [sorted(nodes[q[:t]]) if q[:t] in passed else None for t in range(len(q))])
                )
    logp: dict[tuple[int, tuple[int, ...]], dict[int, float]] = {}
    for b0 in range(0, len(rows), batch_size):
        chunk = rows[b0 : b0 + batch_size]
        rec = _ForceAndRecord([r[1] for r in chunk], [r[2] for r in chunk], temperature)
        policy.generate(
            [prompt_ids[i] for i, _, _ in chunk],
            max_new_tokens=max(len(r[1]) for r in chunk),
            temperature=temperature,
            stop_ids=[eos],
            logits_processor=rec,
        )
        for (i, path, _), steps in zip(chunk, rec.logp):
            for t, d in enumerate(steps):
                if d is not None:
                    logp[(i, path[:t])] = d
    result = []
    for i, seqs in enumerate(seqs_of):
        d = {}
        for a, q in seqs.items():
            tot = 0.0
            for t in range(len(q)):
                step = logp.get((i, q[:t]))
                tot += 0.0 if step is None else step[q[t]]  # a node with one way on: probability 1
            d[a] = float(np.exp(tot))
        result.append(d)
    return result


class Moves:
    """Collects the decisions whose distributions a recursion needs (``add``), then answers them
    all at once (``run``): an ``LLMPlayer`` (sampling, constrained) by ``action_probs`` over the
    distinct prompts, a deterministic fixed strategy (``StrategyPlayer``) by its move."""

    def __init__(self, player: Any) -> None:
        self.player = player
        self.lm = hasattr(player, "policy")
        if self.lm:
            if getattr(player, "greedy", False) or not getattr(player, "constrained", False):
                raise ValueError("the exact best response needs a sampling, constrained LLM player")
            if getattr(player, "top_p", 1.0) < 1.0:
                raise ValueError(f"top_p {player.top_p} < 1 is not supported")
        elif getattr(player, "spec", None) not in MEMORY_ONE:
            raise ValueError(
                f"{getattr(player, 'spec', player)!r}: need an LLM player or a deterministic memory-one "
                f"fixed strategy ({sorted(MEMORY_ONE)}); the recursion keeps only the last round"
            )
        self._index: dict[tuple, int] = {}
        self._queries: list[tuple] = []
        self._fixed: list[dict[str, float]] = []
        self._rng = np.random.default_rng(0)

    def add(self, game: TrustAndSplit, seat: int) -> int:
        """Register the decision of ``seat`` in ``game`` as it is now; returns its index for ``run``."""
        if not self.lm:
            self._fixed.append({self.player.act([game], [seat], self._rng)[0]: 1.0})
            return len(self._fixed) - 1
        pl = self.player
        prompt = decision_prompt(game, seat, pl.prompt_format, pl.prompt_style)
        key = (prompt if isinstance(prompt, str) else repr(prompt), tuple(game.legal_actions()))
        if key not in self._index:
            self._index[key] = len(self._queries)
            self._queries.append((prompt, key[1]))
        return self._index[key]

    def run(self) -> list[dict[str, float]]:
        if not self.lm:
            out, self._fixed = self._fixed, []
            return out
        pl = self.player
        out = action_probs(
            pl.policy,
            [q[0] for q in self._queries],
            [q[1] for q in self._queries],
            temperature=pl.temperature,
            max_new_tokens=getattr(pl, "max_new_tokens", None),
        )
        self._index, self._queries = {}, []
        return out


# ------------------------------------------------------------------------------ the tables
@dataclass
class RoundTables:
    """The frozen player's moves at every state of one round, for one seat.

    ``claim[s, h, said, c]``: P(claim c | hand h, said) with ``said`` 0 for ``-`` (it speaks first)
    and 1 + index of the co-player's claim; ``keep[s, h, c_other, c_own, k]``: P(keep k).
    """

    claim: np.ndarray  # (S, H, 4, H)
    keep: np.ndarray  # (S, H, H, H, K)


def _entries(coins: int) -> list[dict[str, Any]]:
    """Every finished round ``L`` in the state order of the module doc (pair, c0, c1, k0, k1)."""
    out = []
    for (h0, h1), c0, c1, k0, k1 in itertools.product(
        PAIRS, HANDS, HANDS, range(coins + 1), range(coins + 1)
    ):
        out.append(dict(hands=(h0, h1), claims=(c0, c1), keep=(k0, k1), pay=None))
    return out


def _tables(game: TrustAndSplit, moves: Moves, seat: int, r: int, entries: list | None) -> RoundTables:
    """The player's moves in ``seat`` at every (state, own hand, said, own claim) of round ``r``:
    one game, set to each state in turn (only what the seat sees is set; the co-player's hand is a
    placeholder the seat cannot see)."""
    k = game.coins + 1
    states = [None] if entries is None else entries
    first, other = r % 2, 1 - seat
    g = game.clone()
    g.round, g.hands = r, list(g.hands)
    where = []
    for s, e in enumerate(states):
        g.log = [] if e is None else [e]
        for hi, h in enumerate(HANDS):
            g.hands[r] = (h, _other_hand(h)) if seat == 0 else (_other_hand(h), h)
            for said in range(4):
                if (said == 0) != (first == seat):
                    continue  # only the contexts this seat meets this round
                g.messages, g.proposals = [None, None], [None, None]
                if said:
                    g.messages[other] = HANDS[said - 1]
                where.append(("c", s, hi, said, 0, moves.add(g, seat)))
            for co, ci in itertools.product(range(3), range(3)):
                g.messages, g.proposals = [None, None], [None, None]
                g.messages[other], g.messages[seat] = HANDS[co], HANDS[ci]
                if seat == 1:
                    g.proposals[0] = 0  # seat 0 proposes first; hidden from seat 1
                where.append(("k", s, hi, co, ci, moves.add(g, seat)))
    out = moves.run()
    claim = np.zeros((len(states), 3, 4, 3))
    keep = np.zeros((len(states), 3, 3, 3, k))
    for kind, s, hi, a, b, i in where:
        d = out[i]
        if kind == "c":
            for c, p in d.items():
                claim[s, hi, a, HANDS.index(c)] = p
        else:
            for kk, p in d.items():
                keep[s, hi, a, b, int(kk)] = p
    return RoundTables(claim, keep)


def _other_hand(h: str) -> str:
    return next(x for x in HANDS if x != h)  # hidden from the seat whose move is asked


def _fill_pay(entries: list[dict], game: TrustAndSplit) -> None:
    for e in entries:
        v0, v1 = (game.high, game.low) if rps_winner(*e["hands"]) == 0 else (game.low, game.high)
        e["pay"] = split_payoffs(e["keep"][0], e["keep"][1], v0, v1, game.coins)


def _pay_matrices(game: TrustAndSplit, pair: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) payoffs of seat 0 and seat 1 for keeps (k0, k1) under hand pair ``pair``."""
    k = game.coins + 1
    v0, v1 = (game.high, game.low) if rps_winner(*pair) == 0 else (game.low, game.high)
    p0, p1 = np.zeros((k, k)), np.zeros((k, k))
    for a, b in itertools.product(range(k), range(k)):
        p0[a, b], p1[a, b] = split_payoffs(a, b, v0, v1, game.coins)
    return p0, p1


# ------------------------------------------------------------------------------ the recursions
@dataclass
class SplitBestResponse:
    """Exact values (module doc); returns per game, means over both seats where named so."""

    exploiter_return: float  # mean over seats of V_0
    policy_return: float  # the player's return against the best response, mean over seats
    selfplay_collective: float  # the player's expected collective return against itself
    exploit: float  # exploiter_return - selfplay_collective / 2
    per_seat: tuple[float, float]  # V_0 with the exploiter in seat 0, in seat 1
    player: Any = None  # the best response as an arena player (``BestResponsePlayer``)

    def to_dict(self) -> dict[str, Any]:
        return dict(
            exploiter_return=self.exploiter_return,
            policy_return=self.policy_return,
            selfplay_collective=self.selfplay_collective,
            exploit=self.exploit,
            per_seat=list(self.per_seat),
        )


def _game(game_cfg: Any) -> TrustAndSplit:
    name = getattr(game_cfg, "name", game_cfg)
    params = dict(getattr(game_cfg, "params", {}) or {})
    p = dilemma_params(name, params)
    if name != "trust_and_split":
        raise ValueError(f"the exact best response is for trust_and_split, not {name!r}")
    return TrustAndSplit(name, seed=0, **p)  # every param: a new one is passed on, not dropped


def split_best_response(
    game_cfg: Any, player: Any, *, log: Callable[[str], None] | None = None
) -> SplitBestResponse:
    """The exact best response to ``player`` (an ``LLMPlayer`` sampling with the constrained mask,
    or a deterministic memory-one fixed strategy) in Trust-and-Split, both seats, and the player's
    exact self-play value (module doc)."""
    game = _game(game_cfg)
    moves = Moves(player)
    R, K = game.rounds, game.coins + 1
    entries = _entries(game.coins)
    _fill_pay(entries, game)
    pays = [_pay_matrices(game, pr) for pr in PAIRS]
    shape = (6, 3, 3, K, K)
    ve = [np.zeros(shape), np.zeros(shape)]  # per exploiter seat: exploiter's value of L at r + 1
    vp = [np.zeros(shape), np.zeros(shape)]  # the player's value under the best response
    vs = np.zeros(shape)  # self-play collective value
    plans: list[list[Any]] = [[None] * R, [None] * R]  # per exploiter seat and round: (c, k) plans
    for r in range(R - 1, -1, -1):
        ents = None if r == 0 else entries
        tabs = [_tables(game, moves, seat, r, ents) for seat in (0, 1)]
        for e in (0, 1):
            ve[e], vp[e], c_plan, k_plan = _best_round(r, e, tabs[1 - e], ve[e], vp[e], pays)
            plans[e][r] = (c_plan, k_plan)
        vs = _selfplay_round(r, tabs, vs, pays)
        if log:
            log(
                f"round {r + 1}: best response {ve[0].mean():.2f} / {ve[1].mean():.2f}, "
                f"self-play {vs.mean():.2f} (mean over states)"
            )
    v0 = (float(ve[0][0]), float(ve[1][0]))
    sp = float(vs[0])
    ex = float(np.mean(v0))
    pr = float(np.mean([vp[0][0], vp[1][0]]))
    return SplitBestResponse(ex, pr, sp, ex - sp / 2.0, v0, BestResponsePlayer(plans, game.coins))


class BestResponsePlayer:
    """The best response of ``split_best_response`` as a batched arena player: it reads its state
    (round, last round, its hand, the claims so far) from the game and plays the plan's move."""

    name = "best-response"

    def __init__(self, plans: list[list[Any]], coins: int) -> None:
        self.plans, self.k = plans, coins + 1

    def act(self, games: Sequence[TrustAndSplit], players: Sequence[int], rng: Any) -> list[str]:
        out = []
        for g, p in zip(games, players):
            r, K = g.round, self.k
            s = 0
            if r > 0:
                e = g.log[-1]
                c0, c1 = (HANDS.index(c) for c in e["claims"])
                s = (
                    ((PAIRS.index(tuple(e["hands"])) * 3 + c0) * 3 + c1) * K * K
                    + e["keep"][0] * K
                    + e["keep"][1]
                )
            c_plan, k_plan = self.plans[p][r]
            x = HANDS.index(g.hands[r][p])
            said = g.messages[1 - p]
            if g._phase()[0] == "message":
                out.append(HANDS[c_plan[x, 0 if said is None else HANDS.index(said), s]])
            else:
                out.append(str(k_plan[x, HANDS.index(g.messages[p]), HANDS.index(said), s]))
        return out


def _cont(v: np.ndarray, pi: int, ci_e: int, ci_m: int, e: int) -> np.ndarray:
    """(K_e, K_m) continuation at hand pair ``pi`` with the exploiter's claim ``ci_e``, player's
    ``ci_m``, from a seat-order value array (pair, c0, c1, k0, k1)."""
    return v[pi, ci_e, ci_m] if e == 0 else v[pi, ci_m, ci_e].T


def _best_round(
    r: int, e: int, tab: RoundTables, v_e: np.ndarray, v_p: np.ndarray, pays: list
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One round of the best-response recursion (module doc) for the exploiter in seat ``e``;
    ``tab``: the player's tables (seat 1 - e). Returns the values at the round's states and the
    plan: claim index ``c[x, c_h, s]`` (``c_h`` ignored when the exploiter speaks first) and keep
    ``k[x, c_e, c_h, s]``."""
    S = tab.claim.shape[0]
    first_is_exploiter = r % 2 == e
    out_e, out_p = np.zeros(S), np.zeros(S)
    c_plan = np.zeros((3, 3, S), dtype=np.int64)
    k_plan = np.zeros((3, 3, 3, S), dtype=np.int64)
    for xi in range(3):  # the exploiter's hand
        # acc[(c_e, c_h)] = (value rows (S, K) of each k_x, the player's (S, K)), summed over h
        acc: dict[tuple[int, int], list[np.ndarray]] = {}
        for hi in range(3):
            if hi == xi:
                continue
            pair = (HANDS[xi], HANDS[hi]) if e == 0 else (HANDS[hi], HANDS[xi])
            pi = PAIRS.index(pair)
            p0, p1 = pays[pi]
            pe, pm = (p0, p1) if e == 0 else (p1.T, p0.T)  # (K_e, K_m)
            for ce, ch in itertools.product(range(3), range(3)):
                said = 1 + ce if first_is_exploiter else 0
                pc = 0.5 * tab.claim[:, hi, said, ch]  # (S,)
                q = tab.keep[:, hi, ce, ch]  # (S, K_m)
                qe = q @ (pe + _cont(v_e, pi, ce, ch, e)).T  # (S, K_e)
                qp = q @ (pm + _cont(v_p, pi, ce, ch, e)).T
                a = acc.setdefault((ce, ch), [np.zeros((S, q.shape[1])), np.zeros((S, q.shape[1]))])
                a[0] += pc[:, None] * qe
                a[1] += pc[:, None] * qp
        best = {}
        for key, (ae, ap) in acc.items():  # max over k_x per information set
            kx = ae.argmax(1)
            best[key] = (ae[np.arange(S), kx], ap[np.arange(S), kx])
            k_plan[xi, key[0], key[1]] = kx
        if first_is_exploiter:  # max_{c_e} sum_{c_h}
            tot = [
                (sum(best[(ce, ch)][0] for ch in range(3)), sum(best[(ce, ch)][1] for ch in range(3)))
                for ce in range(3)
            ]
            te = np.stack([t[0] for t in tot])  # (3, S)
            tp = np.stack([t[1] for t in tot])
            c = te.argmax(0)
            out_e += te[c, np.arange(S)] / 3.0
            out_p += tp[c, np.arange(S)] / 3.0
            c_plan[xi, :] = c
        else:  # sum_{c_h} max_{c_e}
            for ch in range(3):
                te = np.stack([best[(ce, ch)][0] for ce in range(3)])
                tp = np.stack([best[(ce, ch)][1] for ce in range(3)])
                c = te.argmax(0)
                out_e += te[c, np.arange(S)] / 3.0
                out_p += tp[c, np.arange(S)] / 3.0
                c_plan[xi, ch] = c
    if r == 0:
        return out_e, out_p, c_plan, k_plan
    return out_e.reshape(v_e.shape), out_p.reshape(v_p.shape), c_plan, k_plan


def _selfplay_round(r: int, tabs: list[RoundTables], v: np.ndarray, pays: list) -> np.ndarray:
    """One round of the player's expected collective return against itself."""
    S = tabs[0].claim.shape[0]
    f = r % 2  # the seat that speaks first
    out = np.zeros(S)
    for pi, (h0, h1) in enumerate(PAIRS):
        hs = (HANDS.index(h0), HANDS.index(h1))
        p0, p1 = pays[pi]
        for c0, c1 in itertools.product(range(3), range(3)):
            cs = (c0, c1)
            pf = tabs[f].claim[:, hs[f], 0, cs[f]]
            ps = tabs[1 - f].claim[:, hs[1 - f], 1 + cs[f], cs[1 - f]]
            q0 = tabs[0].keep[:, hs[0], c1, c0]  # (S, K): seat 0's keep given the other's claim c1
            q1 = tabs[1].keep[:, hs[1], c0, c1]
            m = p0 + p1 + v[pi, c0, c1]  # (K, K)
            out += (pf * ps) / 6.0 * np.einsum("sa,ab,sb->s", q0, m, q1)
    return out if r == 0 else out.reshape(v.shape)


def play_stats(game_cfg: Any, br: Any, frozen: Any, games: int, seed: int = 0) -> dict[str, float]:
    """``games`` games a seat of the best response ``br`` against ``frozen``: the best response's
    mean return (a check on the exact value) and what each side does over the rounds (``truth``:
    true claims; ``loser keep`` / ``winner keep``: mean proposals; ``concede``: the loser kept 0)."""
    from games.arena import play
    from games.text import make_game

    rng = np.random.default_rng([seed, 11])
    ret, rows = [], {"br": [], "policy": []}
    for seat in (0, 1):
        gs = [make_game(game_cfg, int(s)) for s in rng.integers(0, 2**31 - 1, size=games)]
        seats = [br, frozen] if seat == 0 else [frozen, br]
        for rec in play(gs, [seats] * games, rng):
            ret.append(rec.returns[seat])
            g = make_game(game_cfg, rec.seed)
            for _, a in rec.moves:
                g.apply(a)
            for e in g.log:
                w = rps_winner(*e["hands"])
                for who, x in (("br", seat), ("policy", 1 - seat)):
                    rows[who].append((e["claims"][x] == e["hands"][x], x == w, e["keep"][x]))
    out = {"br return": float(np.mean(ret))}
    for who, r in rows.items():
        a = np.array(r, dtype=float)  # (rounds, 3): truth, won, keep
        out[f"{who} truth"] = float(a[:, 0].mean())
        out[f"{who} loser keep"] = float(a[a[:, 1] == 0, 2].mean())
        out[f"{who} winner keep"] = float(a[a[:, 1] == 1, 2].mean())
        out[f"{who} concede"] = float((a[a[:, 1] == 0, 2] == 0).mean())
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import json
    from pathlib import Path

    from games.dilemma_exploiter import frozen_run_player

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a self-play run of trust_and_split (its latest checkpoint is frozen)")
    ap.add_argument("--agent", default=None)
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--play", type=int, default=0, help="also play N games a seat against it (play_stats)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    frozen, cfg = frozen_run_player(args.run_dir, args.agent)
    res = split_best_response(cfg.game, frozen, log=print)
    print(
        f"{cfg.game.name}: best response {res.exploiter_return:.2f} (seats {res.per_seat[0]:.2f} / "
        f"{res.per_seat[1]:.2f}; policy {res.policy_return:.2f}), policy self-play collective "
        f"{res.selfplay_collective:.2f}, exploit {res.exploit:.2f}"
    )
    out = res.to_dict()
    if args.play:
        out["play"] = play_stats(cfg.game, res.player, frozen, args.play)
        print("played: " + ", ".join(f"{k} {v:.2f}" for k, v in out["play"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
