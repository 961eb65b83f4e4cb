"""Probing a policy in the iterated matrix games: its cooperation probabilities, read off the LM's
logits, and the exact best response against it (the exploitability probe).

A player of ``games.dilemmas.IteratedMatrixGame`` sees only the round and the last round's two moves,
so a fixed policy is a table ``p[r][last]`` = P(cooperate) at round ``r`` (0-based) after the joint
move ``last`` (own move first; ``None`` in round 0): ``1 + 4 (R - 1)`` entries per seat. Against such
a table the best response is exact by backward induction over (round, last joint move)::

    V_R(s) = 0
    V_r(s) = max_{a in {C, D}}  sum_{b in {C, D}} pi_r(b | s) [u(a, b) + V_{r+1}((b, a))]

with ``u(a, b)`` the exploiter's payoff for playing ``a`` against ``b``. Exploitability (the issue's
definition) is what the best responder gains over mutual cooperation: ``V_0(None) - R * u(C, C)``.
No exploiter is trained: the value is exact for the policy as it samples (temperature) or plays
greedily.

Shape legend: ``R`` rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from games.dilemmas import IteratedMatrixGame, matrix_payoff
from games.league import decision_prompt

JOINT = ("CC", "CD", "DC", "DD")

CoopTable = list[dict[str | None, float]]
"""``table[r][last]``: P(cooperate) at round r after joint move ``last`` (own first; None at r = 0)."""


def ipd_best_response(payoffs: Sequence[float], rounds: int, coop: CoopTable) -> tuple[float, float, list]:
    """Exact best response against the fixed policy ``coop`` (module doc).

    Returns ``(exploiter value, policy's value under it, plan)``; ``plan[r][last]`` is the best
    response's move at round r when the policy's last joint move (policy's own first) was ``last``.
    Ties go to ``C``.
    """
    if len(coop) != rounds:
        raise ValueError(f"coop table has {len(coop)} rounds, the game {rounds}")
    v_next = {s: (0.0, 0.0) for s in JOINT}
    plan: list[dict[str | None, str]] = [dict() for _ in range(rounds)]
    for r in range(rounds - 1, -1, -1):
        states = [None] if r == 0 else list(JOINT)
        v_now: dict[str | None, tuple[float, float]] = {}
        for s in states:
            p = float(coop[r][s])
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"coop[{r}][{s}] = {p} is not a probability")
            best = None
            for a in ("C", "D"):
                ve = vp = 0.0
                for b, pb in (("C", p), ("D", 1.0 - p)):
                    ue, up = matrix_payoff(payoffs, a, b)
                    ne, np_ = v_next[b + a]
                    ve += pb * (ue + ne)
                    vp += pb * (up + np_)
                if best is None or ve > best[0] + 1e-12:
                    best = (ve, vp, a)
            v_now[s] = (best[0], best[1])
            plan[r][s] = best[2]
        v_next = v_now  # type: ignore[assignment]
    ve, vp = v_next[None]  # type: ignore[index]
    return ve, vp, plan


def exploitability(payoffs: Sequence[float], rounds: int, coop: CoopTable) -> float:
    """Best-response gain over mutual cooperation: ``V_0 - R * u(C, C)``."""
    return ipd_best_response(payoffs, rounds, coop)[0] - rounds * float(payoffs[0])


def strategy_table(spec: str, rounds: int) -> CoopTable:
    """The cooperation table of a memory-one fixed strategy: always-cooperate, always-defect,
    tit-for-tat (copies the co-player's last move)."""
    tables = {
        "always-cooperate": lambda s: 1.0,
        "always-defect": lambda s: 0.0,
        "tit-for-tat": lambda s: 1.0 if s is None or s[1] == "C" else 0.0,
    }
    if spec not in tables:
        raise ValueError(f"no memory-one table for {spec!r}; valid: {sorted(tables)}")
    f = tables[spec]
    return [{s: f(s) for s in ([None] if r == 0 else JOINT)} for r in range(rounds)]


@torch.no_grad()
def policy_coop_table(
    policy,
    name: str,
    payoffs: Sequence[float],
    rounds: int,
    seat: int,
    *,
    prompt_format: str = "state",
    prompt_style: str = "compact",
    temperature: float = 1.0,
    greedy: bool = False,
) -> CoopTable:
    """P(cooperate) of an LM ``policy`` (``marl.policies.Policy``) in ``seat`` at every observation,
    under the legal-action mask: ``softmax`` over the first tokens of ``C`` and ``D`` at
    ``temperature`` (or 1/0 for the more likely one when ``greedy``)."""
    ids_c = policy.encode("C")
    ids_d = policy.encode("D")
    if len(ids_c) != 1 or len(ids_d) != 1 or ids_c == ids_d:
        raise ValueError(f"'C' and 'D' must be one distinct token each, got {ids_c} and {ids_d}")
    keys: list[tuple[int, str | None]] = [(0, None)] + [(r, s) for r in range(1, rounds) for s in JOINT]
    prompts = []
    for r, s in keys:
        g = IteratedMatrixGame(name, payoffs, rounds)
        if s is not None:
            mine, theirs = s[0], s[1]
            g.history = [(mine, theirs) if seat == 0 else (theirs, mine)] * r
        if seat == 1:
            g.pending = "C"  # hidden from seat 1: its prompt is the same whatever seat 0 chose
        prompts.append(decision_prompt(g, seat, prompt_format, prompt_style))
    enc = policy.encode_prompts(prompts)
    width = max(len(x) for x in enc)
    ids = torch.full((len(enc), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(enc):  # left-pad so the last position is each prompt's end
        ids[i, width - len(x) :] = torch.tensor(x)
        mask[i, width - len(x) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    dev = policy.device
    logits = policy.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev)).logits
    last = logits[:, -1, [ids_c[0], ids_d[0]]].float().cpu()  # (K, 2)
    if greedy:
        p = (last[:, 0] >= last[:, 1]).double().numpy()
    else:
        p = torch.softmax(last / temperature, -1)[:, 0].double().numpy()
    table: CoopTable = [dict() for _ in range(rounds)]
    for (r, s), pc in zip(keys, np.asarray(p)):
        table[r][s] = float(pc)
    return table


# ------------------------------------------------------------------ the credit rules on a tabular policy
def tabular_selfplay(
    align: bool,
    *,
    rounds: int = 5,
    payoffs: Sequence[float] = (3.0, 0.0, 5.0, 1.0),
    steps: int = 200,
    roots: int = 8,
    group_size: int = 8,
    lr: float = 0.1,
    beta: float = 2.0,
    gamma: float = 0.96,
    reward_scale: float = 1.0,
    center: bool = False,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Self-play of one tabular softmax policy in the iterated matrix game, credited as rule
    ``loo_returns`` (``align=False``) or ``advantage_alignment`` (``align=True``) does, with the same
    credit functions as the LM pipeline.

    A sanity check of the rules apart from the LM: the policy is a logit ``z[r, s]`` of cooperating
    per observation (round ``r``, last joint move ``s``, own first; index 0 = none, 1..4 = ``JOINT``),
    shared by both seats as the LM is. Each step plays ``roots x group_size`` games (a root's games
    form the CRN group of the leave-one-out baseline; the IPD has no chance, so they only share the
    policy), computes per turn the discounted return, ``loo_return_advantages`` over (root, seat,
    round), and for AA ``advantage_alignment_credit`` with the co-player's advantage at the same round
    (``co_player_sum``), rewards multiplied by ``reward_scale`` first; ``center`` subtracts the batch
    mean of the credit per round (AdAlignLLM's ``mean_normalize_ad_align``). The loss is
    ``-mean(credit * log pi)``, stepped by Adam (``lr``).

    Returns the final table ``P(C)`` (R, 5) (entries 1..4 of round 0 unused, left at 0.5 logit 0) and
    one dict per step: ``coop`` (sampled rate), ``p_cc`` / ``p_cd`` (mean P(C) after the co-player
    cooperated / defected, rounds >= 1, both own last moves).
    """
    from marl.credit.multiturn import (
        advantage_alignment_credit,
        co_player_sum,
        discounted_returns,
        loo_return_advantages,
    )

    if rounds < 1 or steps < 0 or roots < 1 or group_size < 2 or not lr > 0:
        raise ValueError("need rounds >= 1, steps >= 0, roots >= 1, group_size >= 2, lr > 0")
    rng = np.random.default_rng(seed)
    z = np.zeros((rounds, 5))
    m, v = np.zeros_like(z), np.zeros_like(z)
    u = np.array(payoffs, dtype=np.float64).reshape(2, 2)  # u[own D?, their D?]
    n = roots * group_size
    # sample layout: (game b, seat p, round r) flattened
    bb, pp, rr = np.meshgrid(np.arange(n), np.arange(2), np.arange(rounds), indexing="ij")
    bb, pp, rr = bb.ravel(), pp.ravel(), rr.ravel()
    traj = bb * 2 + pp
    turn = rr * 2 + pp
    curve = []
    for step in range(steps + 1):
        pc = 1.0 / (1.0 + np.exp(-z))
        d = np.zeros((n, 2, rounds), dtype=np.int64)  # 1 = defect
        state = np.zeros((n, 2, rounds), dtype=np.int64)
        for r in range(rounds):
            for p in (0, 1):
                s = 0 if r == 0 else 1 + 2 * d[:, p, r - 1] + d[:, 1 - p, r - 1]
                state[:, p, r] = s
            probs = pc[r, state[:, :, r]]  # (n, 2)
            d[:, :, r] = (rng.random((n, 2)) >= probs).astype(np.int64)
        rew = u[d, d[:, ::-1, :]]  # (n, 2, R): own payoff of each round
        p_cc = float(pc[1:, [1, 3]].mean()) if rounds > 1 else float("nan")
        p_cd = float(pc[1:, [2, 4]].mean()) if rounds > 1 else float("nan")
        curve.append(dict(coop=float(1.0 - d.mean()), p_cc=p_cc, p_cd=p_cd))
        if log_every and step % log_every == 0:
            who = "AA" if align else "naive"
            print(f"{who} step {step}: coop {curve[-1]['coop']:.3f} P(C|C) {p_cc:.3f} P(C|D) {p_cd:.3f}")
        if step == steps:
            break
        r_flat = rew.ravel() * reward_scale
        ret = discounted_returns(r_flat, traj, turn, gamma=gamma)
        own = loo_return_advantages(ret, (bb // group_size, pp), rr)
        if align:
            co = co_player_sum(own, (bb,), traj, rr)
            credit = advantage_alignment_credit(own, co, traj, turn, beta=beta, gamma=gamma)
        else:
            credit = own
        if center:
            credit = credit - np.bincount(rr, weights=credit)[rr] / np.bincount(rr)[rr]
        # d/dz log pi(a) for a Bernoulli(sigmoid z) cooperate: (1 - p) if C else -p
        st = state.ravel()
        p_s = pc[rr, st]
        glog = np.where(d.ravel() == 0, 1.0 - p_s, -p_s)
        grad = np.zeros_like(z)
        np.add.at(grad, (rr, st), credit * glog / credit.shape[0])
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        t = step + 1
        z = z + lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return 1.0 / (1.0 + np.exp(-z)), curve


# ------------------------------------------------------------------ the same on Trust-and-Split
LAST = ("none", "coop", "defect")
"""The co-player's last finished round as the split tables key it: none yet; it cooperated (kept
nothing as the loser, anything as the winner); it defected (kept coins as the loser)."""


def split_table_shapes(press: bool, coins: int = 10) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of the message table ``(hand 3, heard claim 4 (none, R, P, S), last 3, action 3)`` and
    the split table ``(hand 3, claim 3, last 3, action coins + 1)`` (press) or ``(value 2 (low, high),
    last 3, action coins + 1)`` (no press); the message table is empty without press."""
    msg = (3, 4, len(LAST), 3) if press else (0,)
    split = (3, 3, len(LAST), coins + 1) if press else (2, len(LAST), coins + 1)
    return msg, split


def tabular_split_selfplay(
    align: bool,
    *,
    press: bool = True,
    rounds: int = 10,
    coins: int = 10,
    high: float = 10.0,
    low: float = 1.0,
    steps: int = 300,
    roots: int = 8,
    group_size: int = 8,
    lr: float = 0.05,
    beta: float = 2.0,
    gamma: float = 0.96,
    whiten: bool = False,
    truth_init: float = 0.0,
    fair_init: float = 0.0,
    time_step: str = "turn",
    seed: int = 0,
    log_every: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], list[dict[str, float]]]:
    """Self-play of one tabular softmax policy in Trust-and-Split (``press``) or the no-press split,
    credited as rule ``loo_returns`` (``align=False``) or ``advantage_alignment`` (``align=True``)
    with the LM pipeline's credit functions: whether the rule learns to cooperate apart from the LM.

    The game is ``games.dilemmas.TrustAndSplit``'s (``split_payoffs``, RPS values, alternating first
    speaker, claims seen by the second speaker and at the split). The table is keyed by a coarsening
    of what the LM sees (``split_table_shapes``): own hand, the co-player's claim this round (none
    before it speaks), the co-player's last round (``LAST``); the round number and the last round's
    exact keeps and payoffs are dropped. No press: own value and last round. Both seats share the
    table, as they share the LM. Per player the turns are, in order, (message, split) per round with
    press, the split alone without; the round's payoff is the split turn's reward, a message's reward
    is 0 (as the self-play recorder pays them). Each step plays ``roots x group_size`` games; a root's
    games share the hands of every round (the CRN group); credit per turn: discounted return
    (``gamma`` per turn), ``loo_return_advantages`` over (root, seat, rank), for AA
    ``advantage_alignment_credit`` with ``co_player_sum`` at the same rank; ``time_step="round"``
    (``credit.time_step: round``) makes each player's round one step instead (``round_steps``: the
    round's reward, ``gamma`` per round, baseline and co-player matched per round, each turn of the
    round credited with its round's value); ``whiten`` divides the
    centred credit by its batch std (``credit.normalizer: batch_per_agent``, one agent). Loss
    ``-mean(credit * log pi)``, Adam per table entry (``lr``). The tables start uniform (logits 0),
    except that ``truth_init`` is added to the logit of the true claim (a start where claims already
    carry information, as a pretrained LM's may; 0: uniform), and ``fair_init`` to the logit of
    ``games.dilemmas``' ``fair`` move in every state: the true claim, and in the split keep all when
    the own hand beats the heard claim or equals it (a lie), none when the claim beats the own hand
    (no press: all with the high value, none with the low). The table's key has no "lied last round",
    so ``fair``'s retaliation is not in it (two fair players never lie). With ``x`` added, the fair
    move has probability ``e^x / (e^x + A - 1)`` among ``A`` actions (6.9: 0.99 of 11 keeps).

    Returns the final probability tables ``(message, split)`` and one dict per step: ``collective``
    (mean sum of both returns), ``concede`` (fraction of rounds the loser kept nothing),
    ``loser_keep`` / ``winner_keep`` (mean proposals), ``truth`` (fraction of true claims; nan
    without press).
    """
    from marl.credit.multiturn import (
        advantage_alignment_credit,
        co_player_sum,
        discounted_returns,
        loo_return_advantages,
        round_steps,
    )

    if time_step not in ("turn", "round"):
        raise ValueError(f"time_step ({time_step!r}) must be turn or round")
    if rounds < 1 or coins < 1 or steps < 0 or roots < 1 or group_size < 2 or not lr > 0:
        raise ValueError("need rounds >= 1, coins >= 1, steps >= 0, roots >= 1, group_size >= 2, lr > 0")
    rng = np.random.default_rng(seed)
    shp_m, shp_s = split_table_shapes(press, coins)
    zm, zs = np.zeros(shp_m), np.zeros(shp_s)
    if press:
        zm[np.arange(3), ..., np.arange(3)] += truth_init  # the true claim of each own hand
    if fair_init:
        fair_keep = np.full((3, 3), coins)  # (own hand, heard claim): the claim equal or beaten
        fair_keep[np.arange(3), np.array([1, 2, 0])] = 0  # the claim beats the hand: R<P, P<S, S<R
        if press:
            zm[np.arange(3), ..., np.arange(3)] += fair_init
            h, c = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
            zs[h, c, :, fair_keep[h, c]] += fair_init
        else:
            zs[1, :, coins] += fair_init  # high value: keep all
            zs[0, :, 0] += fair_init  # low value: keep none
    adam = [[np.zeros_like(z), np.zeros_like(z)] for z in (zm, zs)]
    n = roots * group_size
    tpr = 2 if press else 1  # turns per round per player
    beats = np.array([2, 0, 1])  # HANDS index: R beats S, P beats R, S beats P
    games = np.arange(n)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def sample(p: np.ndarray) -> np.ndarray:  # p (n, A) -> (n,) action indices
        u = rng.random((p.shape[0], 1))
        return np.minimum((u > p.cumsum(-1)).sum(-1), p.shape[-1] - 1)

    curve = []
    for step in range(steps + 1):
        pm, ps = (softmax(zm) if press else zm), softmax(zs)
        # hands per root and round, shared by the root's games (common random numbers)
        h = np.stack([rng.permutation(3)[:2] for _ in range(roots * rounds)]).reshape(roots, rounds, 2)
        hands = np.repeat(h, group_size, axis=0)  # (n, R, 2)
        win = (beats[hands[..., 0]] == hands[..., 1]).astype(np.int64)  # 1: seat 0 wins
        win = 1 - win  # seat index of the winner
        rew = np.zeros((n, 2, rounds * tpr))
        keys_m: list[tuple] = []  # (table index tuple, action) per sample, in sample layout
        keys_s: list[tuple] = []
        last = np.zeros((n, 2), dtype=np.int64)  # LAST index of the co-player, per seat
        act_m = np.zeros((n, 2, rounds), dtype=np.int64)
        act_s = np.zeros((n, 2, rounds), dtype=np.int64)
        st_m = np.zeros((n, 2, rounds, 3), dtype=np.int64)
        st_s = np.zeros((n, 2, rounds, 3), dtype=np.int64)
        for r in range(rounds):
            own_h = hands[:, r, :]  # (n, 2)
            if press:
                first = r % 2
                claim = np.zeros((n, 2), dtype=np.int64)  # heard claim: 0 none, 1 + hand
                for seat in (first, 1 - first):
                    heard = claim[:, 1 - seat]
                    st_m[:, seat, r] = np.stack([own_h[:, seat], heard, last[:, seat]], -1)
                    a = sample(pm[own_h[:, seat], heard, last[:, seat]])
                    act_m[:, seat, r] = a
                    claim[:, seat] = 1 + a
                for seat in (0, 1):
                    st_s[:, seat, r] = np.stack([own_h[:, seat], claim[:, 1 - seat] - 1, last[:, seat]], -1)
                    act_s[:, seat, r] = sample(ps[own_h[:, seat], claim[:, 1 - seat] - 1, last[:, seat]])
            else:
                for seat in (0, 1):
                    val = (win[:, r] == seat).astype(np.int64)
                    st_s[:, seat, r] = np.stack([val, last[:, seat], np.zeros(n, np.int64)], -1)
                    act_s[:, seat, r] = sample(ps[val, last[:, seat]])
            k0, k1 = act_s[:, 0, r], act_s[:, 1, r]
            denom = np.maximum(coins, k0 + k1).astype(np.float64)
            v0 = np.where(win[:, r] == 0, high, low)
            v1 = np.where(win[:, r] == 1, high, low)
            rew[:, 0, r * tpr + tpr - 1] = coins * k0 / denom * v0
            rew[:, 1, r * tpr + tpr - 1] = coins * k1 / denom * v1
            loser = 1 - win[:, r]
            loser_kept = act_s[games, loser, r] > 0
            for seat in (0, 1):  # what seat sees of its co-player
                co_defect = (loser == 1 - seat) & loser_kept
                last[:, seat] = np.where(co_defect, 2, 1)
        del keys_m, keys_s
        loser_all = 1 - win  # (n, R)
        lk = np.take_along_axis(act_s, loser_all[:, None, :], 1)[:, 0]
        wk = np.take_along_axis(act_s, win[:, None, :], 1)[:, 0]
        truth = float((act_m == hands.transpose(0, 2, 1)).mean()) if press else float("nan")
        curve.append(
            dict(
                collective=float(rew.sum((1, 2)).mean()),
                concede=float((lk == 0).mean()),
                loser_keep=float(lk.mean()),
                winner_keep=float(wk.mean()),
                truth=truth,
            )
        )
        if log_every and step % log_every == 0:
            c = curve[-1]
            print(
                f"{'AA' if align else 'naive'} step {step}: collective {c['collective']:.1f} concede "
                f"{c['concede']:.3f} loser keep {c['loser_keep']:.2f} winner keep {c['winner_keep']:.2f} "
                f"truth {c['truth']:.2f}"
            )
        if step == steps:
            break
        # sample layout: (game b, seat p, rank t) flattened; rank t = r * tpr (+1 for the split)
        t_all = rounds * tpr
        bb, pp, tt = np.meshgrid(games, np.arange(2), np.arange(t_all), indexing="ij")
        bb, pp, tt = bb.ravel(), pp.ravel(), tt.ravel()
        traj = bb * 2 + pp
        r_steps, inverse = rew.ravel(), None
        if time_step == "round":  # one step per (game, seat, round): tt becomes the round
            r_steps, first, inverse = round_steps(r_steps, traj, tt // tpr)
            bb, pp, tt, traj = bb[first], pp[first], tt[first] // tpr, traj[first]
        ret = discounted_returns(r_steps, traj, tt, gamma=gamma)
        own = loo_return_advantages(ret, (bb // group_size, pp), tt)
        if align:
            co = co_player_sum(own, (bb,), traj, tt)
            credit = advantage_alignment_credit(own, co, traj, tt, beta=beta, gamma=gamma)
        else:
            credit = own
        if inverse is not None:
            credit = credit[inverse]
        if whiten:
            credit = (credit - credit.mean()) / (credit.std() + 1e-6)
        credit = credit.reshape(n, 2, rounds, tpr) / credit.size
        grads = []
        for z, st, act, c, ndim in (
            (zm, st_m, act_m, credit[..., 0], 3),
            (zs, st_s, act_s, credit[..., -1], 3 if press else 2),
        ):
            if z.size == 0 or (z is zm and not press):
                grads.append(None)
                continue
            idx = tuple(st[..., i].ravel() for i in range(ndim))
            p = softmax(z)[idx]  # (S, A)
            g = -p * c.ravel()[:, None]
            g[np.arange(g.shape[0]), act.ravel()] += c.ravel()
            grad = np.zeros_like(z)
            np.add.at(grad, idx, g)
            grads.append(grad)
        t = step + 1
        for z, (m, v), g in zip((zm, zs), adam, grads):
            if g is None:
                continue
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            z += lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return ((softmax(zm) if press else zm), softmax(zs)), curve


def split_round_stats(game_cfg: Any, recs: Sequence[Any]) -> dict[str, float]:
    """Replays Trust-and-Split records (seed and moves) and averages over their rounds: the loser
    kept nothing (``concede``), the loser's and winner's proposals, true claims (``truth``)."""
    from games.dilemmas import rps_winner
    from games.text import make_game

    if not recs:
        raise ValueError("no game records")
    concede, lk, wk, truth = [], [], [], []
    for rec in recs:
        g = make_game(game_cfg, rec.seed)
        for _, a in rec.moves:
            g.apply(a)
        for e in g.log:
            w = rps_winner(*e["hands"])
            concede.append(e["keep"][1 - w] == 0)
            lk.append(e["keep"][1 - w])
            wk.append(e["keep"][w])
            if e["claims"][0] is not None:
                truth += [e["claims"][s] == e["hands"][s] for s in (0, 1)]
    out = {"concede": float(np.mean(concede)), "loser keep": float(np.mean(lk))}
    out["winner keep"] = float(np.mean(wk))
    out["truth"] = float(np.mean(truth)) if truth else float("nan")
    return out
