"""Synthetic bAbI-style stories: people move, pick up and drop objects; a question needs 1-3 facts.

Each statement is one time step encoded as concatenated one-hots (actor | verb | object |
place | question type); the question is the final step. Question types, as in bAbI tasks 1-3:

  1 fact   "Where is Mary?"                         latest move of Mary
  2 facts  "Where is the football?"                 latest get/drop of the football and the
                                                    latest move of its carrier before then/now
  3 facts  "Where was the football before the X?"   latest get/drop, the carrier's last move to X
                                                    and the carrier's move before that one; X is
                                                    a place the carrier took the football to in
                                                    its latest carrying spell

Stories are simulated forward and always stay consistent: a person gets an object only once the
person's place is known and only where the object lies (anywhere if it has never been seen); only
a carrier drops. Stories that cannot pose the requested question are redrawn. A question with f
facts gets a story of exactly f + `distractors` statements, left-padded with all-zero steps to
the longest story so that every sequence has the same length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Generated, TaskSpec, decode_one_hot, int_option, layout_of, put_one_hot, verdict

PEOPLE = ("Mary", "John", "Sandra", "Daniel", "Bill", "Fred", "Julie", "Jeff", "Emily", "Greg")
PLACES = (
    "kitchen", "garden", "office", "bathroom", "hallway",
    "bedroom", "cellar", "attic", "park", "school",
)  # fmt: skip
OBJECTS = ("football", "apple", "milk", "book", "key", "cup", "hat", "box")
VERBS = ("moved to", "got", "dropped")
MOVE, GET, DROP = 0, 1, 2
# NOTE: relative frequencies of moves, gets and drops among the actions possible at a step.
ACTION_WEIGHTS = np.array([0.5, 0.3, 0.2])
MAX_REDRAWS = 500


def _check(opts: dict[str, Any]) -> dict[str, Any]:
    facts = opts["facts"]
    facts = (facts,) if isinstance(facts, (int, np.integer)) else tuple(facts)
    if not facts or any(isinstance(f, bool) or f not in (1, 2, 3) for f in facts):
        raise ValueError(
            f"babi_synthetic: facts must be 1, 2, 3 or a sequence of them, got {facts}"
        )
    opts["facts"] = tuple(sorted({int(f) for f in facts}))
    opts["people"] = int_option("babi_synthetic", opts, "people", 1, len(PEOPLE))
    opts["places"] = int_option("babi_synthetic", opts, "places", 2, len(PLACES))
    low_objects = 1 if max(opts["facts"]) > 1 else 0
    opts["objects"] = int_option("babi_synthetic", opts, "objects", low_objects, len(OBJECTS))
    opts["distractors"] = int_option("babi_synthetic", opts, "distractors", 0)
    return opts


def _layout(opts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return layout_of(
        actor=opts["people"], verb=3, object=opts["objects"], place=opts["places"], question=3
    )


def _simulate(
    batch: int, steps: int, rng: np.random.Generator, n_people: int, n_obj: int, n_place: int
) -> dict[str, np.ndarray]:
    """Play `steps` random consistent actions in `batch` worlds; return sentences and state."""

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, -1, dtype=np.int64)

    actor, verb, obj, place = (full(batch, steps) for _ in range(4))
    person_at, last_move = full(batch, n_people), full(batch, n_people)
    holder, lies_at, last_touch = full(batch, n_obj), full(batch, n_obj), full(batch, n_obj)
    # The latest carrying spell of each object: the places it has been since it was last picked
    # up (the first is where it was got) and the move that took its carrier to each of them.
    trail_at, trail_move = full(batch, n_obj, steps + 1), full(batch, n_obj, steps + 1)
    trail_len = np.zeros((batch, n_obj), dtype=np.int64)

    for t in range(steps):
        where = person_at[:, :, None]  # (B, people, 1)
        lying = lies_at[:, None, :]  # (B, 1, objects)
        can_get = (where >= 0) & (holder < 0)[:, None, :] & ((lying < 0) | (lying == where))
        can_drop = holder >= 0  # (B, objects)
        weights = ACTION_WEIGHTS * np.stack(
            [np.ones(batch, bool), can_get.any(axis=(1, 2)), can_drop.any(axis=1)], axis=1
        )  # (B, 3)
        cum = np.cumsum(weights, axis=1)
        draw = rng.random(batch) * cum[:, -1]
        action = (draw[:, None] >= cum).sum(axis=1)  # (B,) MOVE, GET or DROP
        who = rng.integers(0, n_people, size=batch)
        hop = rng.integers(1, n_place, size=batch)  # a place other than the current one
        fresh = rng.integers(0, n_place, size=batch)
        pick = np.zeros(batch, dtype=np.int64)  # (B,) flat (person, object) index
        let_go = np.zeros(batch, dtype=np.int64)  # (B,) object index
        if n_obj:
            scores = rng.random((batch, n_people * n_obj))
            pick = np.where(can_get.reshape(batch, -1), scores, -1.0).argmax(axis=1)
            let_go = np.where(can_drop, rng.random((batch, n_obj)), -1.0).argmax(axis=1)

        r = np.nonzero(action == MOVE)[0]
        p = who[r]
        now = person_at[r, p]
        dest = np.where(now >= 0, (now + hop[r]) % n_place, fresh[r])
        person_at[r, p], last_move[r, p] = dest, t
        i, o = np.nonzero(holder[r] == p[:, None])  # carried objects: (story, object) pairs
        end = trail_len[r[i], o]
        trail_at[r[i], o, end], trail_move[r[i], o, end] = dest[i], t
        trail_len[r[i], o] = end + 1
        actor[r, t], verb[r, t], place[r, t] = p, MOVE, dest

        r = np.nonzero(action == GET)[0]
        p, o = np.divmod(pick[r], max(n_obj, 1))  # no gets without objects
        holder[r, o], lies_at[r, o], last_touch[r, o] = p, -1, t
        trail_at[r, o], trail_move[r, o] = -1, -1
        trail_at[r, o, 0], trail_move[r, o, 0] = person_at[r, p], last_move[r, p]
        trail_len[r, o] = 1
        actor[r, t], verb[r, t], obj[r, t] = p, GET, o

        r = np.nonzero(action == DROP)[0]
        o = let_go[r]
        p = holder[r, o]
        lies_at[r, o], holder[r, o], last_touch[r, o] = person_at[r, p], -1, t
        actor[r, t], verb[r, t], obj[r, t] = p, DROP, o

    return {
        "actor": actor, "verb": verb, "object": obj, "place": place,
        "last_move": last_move, "person_at": person_at, "last_touch": last_touch,
        "trail_at": trail_at, "trail_move": trail_move, "trail_len": trail_len,
    }  # fmt: skip


def _last_visits(world: dict[str, np.ndarray]) -> np.ndarray:
    """Mask (B, objects, slots) of trail entries after the first that are an object's last visit
    to their place in its latest spell: the places X that "before the X" can name unambiguously."""
    at = world["trail_at"]  # (B, objects, slots)
    slot = np.arange(at.shape[2])
    filled = slot < world["trail_len"][..., None]  # (B, objects, slots)
    same = at[..., :, None] == at[..., None, :]  # (B, objects, slots, slots)
    revisited = (same & (slot[None, :] > slot[:, None]) & filled[..., None, :]).any(axis=-1)
    return filled & (slot >= 1) & ~revisited


def _ask(facts: int, world: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
    """Pick a question needing `facts` facts per story; ok (B,) marks stories that can pose it."""
    batch = world["actor"].shape[0]
    if facts == 1:
        can = world["last_move"] >= 0  # (B, people)
    elif facts == 2:
        can = world["last_touch"] >= 0  # (B, objects)
    else:
        can = _last_visits(world).reshape(batch, -1)  # (B, objects * slots)
    rows = np.arange(batch)
    ok = can.any(axis=1)
    choice = np.where(can, rng.random(can.shape), -1.0).argmax(axis=1)  # (B,)
    support = np.full((batch, 3), -1, dtype=np.int64)
    asked_place = np.full(batch, -1, dtype=np.int64)
    if facts == 1:
        subject = choice
        answer = world["person_at"][rows, subject]
        support[:, 0] = world["last_move"][rows, subject]
    else:
        # NOTE: in stories that cannot pose the question these indices are meaningless (they
        # may wrap around at -1); those stories are redrawn.
        if facts == 2:
            subject = choice
            visit = world["trail_len"][rows, subject] - 1  # the object's current place
        else:
            subject, visit = np.divmod(choice, world["trail_at"].shape[2])
        at, move = world["trail_at"], world["trail_move"]
        answer = at[rows, subject, visit]
        support[:, 0] = world["last_touch"][rows, subject]
        support[:, 1] = move[rows, subject, visit]
        if facts == 3:
            asked_place, answer = answer, at[rows, subject, visit - 1]
            support[:, 2] = move[rows, subject, visit - 1]
    return {
        "ok": ok,
        "subject": subject,
        "answer": answer,
        "place": asked_place,
        "support": support,
    }


def _answerable(
    facts: int, batch: int, steps: int, rng: np.random.Generator, opts: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Stories of `steps` statements that can all pose a `facts`-fact question (redraws rest)."""
    sizes = (opts["people"], opts["objects"], opts["places"])
    world = _simulate(batch, steps, rng, *sizes)
    question = _ask(facts, world, rng)
    for _ in range(MAX_REDRAWS):
        redo = np.nonzero(~question["ok"])[0]
        if redo.size == 0:
            return world, question
        # NOTE: draw twice as many candidates as are missing (plus a few) so that rare questions
        # need few rounds; the first answerable ones fill the gaps in order.
        new_world = _simulate(2 * redo.size + 8, steps, rng, *sizes)
        new_question = _ask(facts, new_world, rng)
        good = np.nonzero(new_question["ok"])[0][: redo.size]
        redo = redo[: good.size]
        for part, new_part in ((world, new_world), (question, new_question)):
            for key in part:
                part[key][redo] = new_part[key][good]
    raise RuntimeError(
        f"babi_synthetic: could not draw stories posing a {facts}-fact question in "
        f"{MAX_REDRAWS} rounds with options {opts}; allow more distractors or people/objects"
    )


def _generate(batch: int, rng: np.random.Generator, opts: dict[str, Any]) -> Generated:
    facts_options, distractors = opts["facts"], opts["distractors"]
    longest = max(facts_options) + distractors
    seq = longest + 1
    cols = {name: np.full((batch, seq), -1, dtype=np.int64) for name in _layout(opts)}
    targets = np.zeros(batch, dtype=np.int64)
    support = np.full((batch, 3), -1, dtype=np.int64)
    facts = rng.choice(np.array(facts_options), size=batch)

    for f in facts_options:
        rows = np.nonzero(facts == f)[0]
        if rows.size == 0:
            continue
        steps = f + distractors
        pad = longest - steps
        world, question = _answerable(f, rows.size, steps, rng, opts)
        for name in ("actor", "verb", "object", "place"):
            cols[name][rows, pad:longest] = world[name]
        cols["question"][rows, longest] = f - 1
        subject_col = "actor" if f == 1 else "object"
        cols[subject_col][rows, longest] = question["subject"]
        cols["place"][rows, longest] = question["place"]
        targets[rows] = question["answer"]
        support[rows] = np.where(question["support"] >= 0, question["support"] + pad, -1)

    lay = _layout(opts)
    x = np.zeros((batch, seq, lay["question"][1]), dtype=np.float32)
    for name, (start, _) in lay.items():
        put_one_hot(x, start, cols[name])  # (B, T) indices
    extra = {"facts": facts.astype(np.int64), "supporting": support}
    return x, targets, extra


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    lay = _layout(opts)
    facts = opts["facts"]
    names = {
        "people": list(PEOPLE[: opts["people"]]),
        "objects": list(OBJECTS[: opts["objects"]]),
        "places": list(PLACES[: opts["places"]]),
        "verbs": list(VERBS),
    }
    return {
        "input_size": lay["question"][1],
        "num_classes": opts["places"],
        "seq_len": max(facts) + opts["distractors"] + 1,
        "chance_accuracy": 1.0 / opts["places"],
        "description": (
            f"bAbI-style place questions needing {'/'.join(map(str, facts))} supporting facts"
            f" among {opts['distractors']} distractor statements"
        ),
        "extra": {"layout": lay, "names": names},
    }


def _render(row: np.ndarray, target: Any, prediction: Any, opts: dict[str, Any]) -> str:
    lay = _layout(opts)
    lines = []
    for s in range(row.shape[0]):
        if not row[s].any():
            continue
        who = decode_one_hot(row[s], lay["actor"])
        what = decode_one_hot(row[s], lay["object"])
        where = decode_one_hot(row[s], lay["place"])
        kind = decode_one_hot(row[s], lay["question"])
        if kind == 0:
            lines.append(f"step {s}: Where is {PEOPLE[who]}?")
        elif kind == 1:
            lines.append(f"step {s}: Where is the {OBJECTS[what]}?")
        elif kind == 2:
            lines.append(f"step {s}: Where was the {OBJECTS[what]} before the {PLACES[where]}?")
        else:
            verb = decode_one_hot(row[s], lay["verb"])
            thing = f"the {PLACES[where]}" if verb == MOVE else f"the {OBJECTS[what]}"
            lines.append(f"step {s}: {PEOPLE[who]} {VERBS[verb]} {thing}.")
    guess = None if prediction is None else PLACES[int(prediction)]
    lines.append(verdict(PLACES[int(target)], guess))
    return "\n".join(lines)


SPEC = TaskSpec(
    name="babi_synthetic",
    description=__doc__.splitlines()[0],
    defaults={"facts": (1, 2, 3), "people": 3, "objects": 2, "places": 4, "distractors": 4},
    hard={"people": 5, "objects": 4, "places": 6, "distractors": 12},
    check=_check,
    generate=_generate,
    describe=_describe,
    render=_render,
)
