"""Synthetic reasoning tasks: determinism, shapes, answers against brute-force solvers, chance."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tasks

REPO = Path(__file__).resolve().parents[1]
MOVE, GET, DROP = 0, 1, 2


def hot(row, layout, name):
    """Index of the hot feature of block `name` in one step, or -1 when the block is empty."""
    start, stop = layout[name]
    block = row[start:stop]
    assert set(np.unique(block)) <= {0.0, 1.0}, f"{name} block is not one-hot: {block}"
    assert block.sum() <= 1, f"{name} block has several hot features: {block}"
    return int(np.argmax(block)) if block.any() else -1


@pytest.fixture(scope="module", params=tasks.TASKS)
def task(request):
    return request.param


# ---------------------------------------------------------------- determinism, shapes, ranges


def test_task_list():
    assert set(tasks.TASKS) == {
        "nth_farthest",
        "sorting",
        "tracking",
        "pair_matching",
        "babi_synthetic",
    }


def test_same_seed_same_data_and_other_seed_differs(task):
    a = tasks.generate_reasoning_data(task, 64, 32, seed=3)
    b = tasks.generate_reasoning_data(task, 64, 32, seed=3)
    c = tasks.generate_reasoning_data(task, 64, 32, seed=4)
    for split_a, split_b in ((a.train, b.train), (a.test, b.test)):
        np.testing.assert_array_equal(split_a.inputs, split_b.inputs)
        np.testing.assert_array_equal(split_a.targets, split_b.targets)
        for key, value in split_a.extra.items():
            np.testing.assert_array_equal(value, split_b.extra[key])
    assert a.meta.example == b.meta.example
    assert not np.array_equal(a.train.inputs, c.train.inputs)
    assert not np.array_equal(a.test.inputs, c.test.inputs)
    assert not np.array_equal(a.train.inputs[:32], a.test.inputs)


def test_test_split_does_not_depend_on_train_size(task):
    small = tasks.generate_reasoning_data(task, 10, 20, seed=5)
    large = tasks.generate_reasoning_data(task, 50, 20, seed=5)
    np.testing.assert_array_equal(small.test.inputs, large.test.inputs)


@pytest.mark.parametrize("hard", [False, True])
def test_shapes_dtypes_and_ranges(task, hard):
    data = tasks.generate_reasoning_data(task, 300, 100, seed=0, hard=hard)
    meta = data.meta
    for split, n in ((data.train, 300), (data.test, 100)):
        assert split.inputs.dtype == np.float32
        assert split.targets.dtype == np.int64
        assert split.inputs.shape == (n, meta.seq_len, meta.input_size)
        assert split.targets.shape == (n,)
        assert len(split) == n
        assert np.isfinite(split.inputs).all()
        assert split.targets.min() >= 0 and split.targets.max() < meta.num_classes
        # every class occurs: targets are spread over all classes, not stuck on a few
        assert len(np.unique(split.targets)) == meta.num_classes
    assert meta.name == task
    assert meta.target_per_step is False
    assert 0 < meta.chance_accuracy < 1
    assert meta.description and "\n" not in meta.description
    assert meta.options["hard"] is hard
    assert meta.example == meta.render(data.train.inputs[0], data.train.targets[0])
    stop = max(stop for _, stop in meta.extra["layout"].values())
    assert stop == meta.input_size


def test_hard_variant_is_larger(task):
    easy = tasks.task_meta(task)
    hard = tasks.task_meta(task, hard=True)
    assert hard.seq_len >= easy.seq_len and hard.input_size >= easy.input_size
    assert (hard.seq_len, hard.input_size, hard.num_classes) != (
        easy.seq_len,
        easy.input_size,
        easy.num_classes,
    )


def test_explicit_option_overrides_hard_default():
    meta = tasks.task_meta("tracking", hard=True, moves=2)
    assert meta.options["moves"] == 2 and meta.options["objects"] == 5
    assert meta.seq_len == 5 + 2 + 1


def test_render_marks_prediction(task):
    data = tasks.generate_reasoning_data(task, 2, 1, seed=0)
    row, target = data.train.inputs[0], int(data.train.targets[0])
    wrong = (target + 1) % data.meta.num_classes
    assert "WRONG" in data.meta.render(row, target, wrong)
    assert "right" in data.meta.render(row, target, target)
    with pytest.raises(ValueError, match="shape"):
        data.meta.render(row[1:], target)


def test_sample_batch_is_deterministic_under_rng(task):
    x1, y1 = tasks.sample_batch(task, 128, np.random.default_rng(7))
    x2, y2 = tasks.sample_batch(task, 128, np.random.default_rng(7))
    x3, _ = tasks.sample_batch(task, 128, np.random.default_rng(8))
    meta = tasks.task_meta(task)
    assert x1.shape == (128, meta.seq_len, meta.input_size) and x1.dtype == np.float32
    assert y1.shape == (128,) and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    sampler = tasks.make_sampler(task)
    x4, y4 = sampler(128, 7)
    np.testing.assert_array_equal(x4, x1)
    np.testing.assert_array_equal(y4, y1)
    # a batch holds distinct examples, not one example repeated
    assert len({row.tobytes() for row in x1}) == 128


def test_sample_split_matches_sample_batch(task):
    split = tasks.sample_split(task, 16, 11)
    x, y = tasks.sample_batch(task, 16, 11)
    np.testing.assert_array_equal(split.inputs, x)
    np.testing.assert_array_equal(split.targets, y)


def test_majority_class_scores_chance(task):
    data = tasks.generate_reasoning_data(task, 4000, 4000, seed=1)
    majority = np.bincount(data.train.targets).argmax()
    accuracy = np.mean(data.test.targets == majority)
    p = data.meta.chance_accuracy
    if task != "tracking":  # every other task's answer is uniform over its classes
        assert p == pytest.approx(1.0 / data.meta.num_classes)
    # four standard errors of a 4000-sample proportion, plus the bias of picking the max class
    assert abs(accuracy - p) < 4 * np.sqrt(p * (1 - p) / 4000) + 0.01


def test_library_imports_nothing_else_from_the_project():
    code = (
        "import sys, tasks, tasks.babi\n"
        "ours = {'tensorgrad', 'models', 'experiments'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ours))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- errors


def test_unknown_task_lists_valid_tasks():
    with pytest.raises(ValueError) as info:
        tasks.generate_reasoning_data("nth_furthest", 10, 10)
    for name in tasks.TASKS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid tasks"):
        tasks.sample_batch("copy", 4, 0)


def test_unknown_option_lists_valid_options(task):
    with pytest.raises(ValueError) as info:
        tasks.generate_reasoning_data(task, 10, 10, colour="red")
    message = str(info.value)
    assert "colour" in message
    for name in tasks.valid_options(task):
        assert name in message


@pytest.mark.parametrize(
    "task_name, options",
    [
        ("nth_farthest", {"K": 1}),
        ("nth_farthest", {"d": 0}),
        ("nth_farthest", {"K": 2.5}),
        ("sorting", {"items": 1}),
        ("tracking", {"places": 1}),
        ("tracking", {"wrap": "no"}),
        ("pair_matching", {"pairs": 7, "tokens": 6}),
        ("babi_synthetic", {"facts": 4}),
        ("babi_synthetic", {"facts": ()}),
        ("babi_synthetic", {"people": 99}),
        ("babi_synthetic", {"facts": (2,), "objects": 0}),
        ("sorting", {"hard": "yes"}),
    ],
)
def test_bad_option_values_raise(task_name, options):
    with pytest.raises(ValueError, match=task_name):
        tasks.task_meta(task_name, **options)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="n_train"):
        tasks.generate_reasoning_data("sorting", 0, 10)
    with pytest.raises(ValueError, match="batch_size"):
        tasks.sample_batch("sorting", 0, 0)


# ---------------------------------------------------------------- Split helpers


def test_batches_cover_every_row_once():
    split = tasks.generate_reasoning_data("pair_matching", 23, 1).train
    seen = [y for _, y in split.batches(5, np.random.default_rng(0))]
    assert [len(y) for y in seen] == [5, 5, 5, 5, 3]
    rows = np.concatenate([x for x, _ in split.batches(5, np.random.default_rng(0))])
    order = np.lexsort(rows.reshape(23, -1).T)
    np.testing.assert_array_equal(
        rows[order], split.inputs[np.lexsort(split.inputs.reshape(23, -1).T)]
    )
    assert [len(y) for _, y in split.batches(5, drop_last=True)] == [5, 5, 5, 5]
    x, y = next(split.batches(4))
    np.testing.assert_array_equal(x, split.inputs[:4])
    with pytest.raises(ValueError):
        next(split.batches(0))


def test_subset_keeps_extras_aligned():
    split = tasks.generate_reasoning_data("nth_farthest", 20, 1).train
    part = split.subset(np.array([3, 7, 11]))
    np.testing.assert_array_equal(part.inputs, split.inputs[[3, 7, 11]])
    np.testing.assert_array_equal(part.extra["n"], split.extra["n"][[3, 7, 11]])
    np.testing.assert_array_equal(part.targets, split.targets[[3, 7, 11]])
    one = split.subset(5)
    assert one.inputs.shape == (1, 8, 40) and one.extra["m"][0] == split.extra["m"][5]
    assert len(split.subset(split.extra["n"] == 7)) == np.sum(split.extra["n"] == 7)


def test_split_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        tasks.Split(np.zeros((4, 3, 2), np.float32), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="inputs"):
        tasks.Split(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))


# ---------------------------------------------------------------- Nth-farthest


def nth_farthest_by_hand(row, d, k):
    """Answer one Nth-farthest example with explicit loops over its steps and coordinates."""
    vectors, labels = [], []
    for t in range(k):
        vectors.append([float(v) for v in row[t, :d]])
        labels.append(int(np.argmax(row[t, d : d + k])))
    n = int(np.argmax(row[0, d + k : d + 2 * k]))
    m = int(np.argmax(row[0, d + 2 * k :]))
    for t in range(1, k):
        assert int(np.argmax(row[t, d + k : d + 2 * k])) == n, "n must repeat at every step"
        assert int(np.argmax(row[t, d + 2 * k :])) == m, "m must repeat at every step"
    ref = vectors[labels.index(m)]
    distances = []
    for t in range(k):
        total = 0.0
        for a, b in zip(vectors[t], ref):
            total += (a - b) ** 2
        distances.append((total**0.5, t))
    farthest_first = sorted(distances, key=lambda pair: -pair[0])
    return labels[farthest_first[n][1]], n, m


@pytest.mark.parametrize("options", [{"K": 4, "d": 2}, {}, {"K": 3, "d": 1}])
def test_nth_farthest_matches_brute_force(options):
    data = tasks.generate_reasoning_data("nth_farthest", 300, 10, seed=2, **options)
    k = data.meta.options["K"]
    d = data.meta.options["d"]
    assert data.meta.input_size == d + 3 * k and data.meta.seq_len == k
    for i in range(300):
        row = data.train.inputs[i]
        assert sorted(int(np.argmax(row[t, d : d + k])) for t in range(k)) == list(range(k))
        answer, n, m = nth_farthest_by_hand(row, d, k)
        assert data.train.targets[i] == answer
        assert data.train.extra["n"][i] == n and data.train.extra["m"][i] == m
        if n == k - 1:
            assert answer == m
        else:
            assert answer != m


def test_nth_farthest_paper_size_is_forty_features():
    meta = tasks.task_meta("nth_farthest")
    assert (meta.options["K"], meta.options["d"]) == (8, 16)
    assert meta.input_size == 40 and meta.num_classes == 8 and meta.seq_len == 8


def test_labels_are_not_time_positions():
    split = tasks.sample_split("nth_farthest", 500, 0)
    labels = split.inputs[:, :, 16:24].argmax(axis=2)  # (N, K)
    assert np.mean(labels == np.arange(8)) < 0.2


def test_vectors_are_uniform_in_the_cube():
    vectors = tasks.sample_split("nth_farthest", 2000, 0).inputs[:, :, :16]
    assert vectors.min() >= -1 and vectors.max() <= 1
    assert abs(vectors.mean()) < 0.01 and abs(vectors.var() - 1 / 3) < 0.01


def test_guess_level_is_two_over_k_and_is_what_a_geometry_blind_guesser_scores():
    levels = tasks.guess_levels(8)
    assert levels["guess_level"] == pytest.approx(0.25)
    assert levels["guess_level_without_excluding_m"] == pytest.approx(2 / 8 - 1 / 64)
    meta = tasks.task_meta("nth_farthest")
    assert meta.extra["guess_level"] == pytest.approx(0.25)

    split = tasks.sample_split("nth_farthest", 40000, 9)
    n, m = tasks.nth_farthest_queries(split.inputs, K=8)
    np.testing.assert_array_equal(n, split.extra["n"])
    np.testing.assert_array_equal(m, split.extra["m"])
    rng = np.random.default_rng(0)
    other = (m + rng.integers(1, 8, size=m.shape)) % 8  # uniform over labels != m
    guess = np.where(n == 7, m, other)
    # three standard errors of a proportion over 40,000 examples
    assert np.mean(guess == split.targets) == pytest.approx(0.25, abs=0.007)
    blind = np.where(n == 7, m, rng.integers(0, 8, size=m.shape))
    assert np.mean(blind == split.targets) == pytest.approx(2 / 8 - 1 / 64, abs=0.007)


def test_hard_mask_selects_queries_that_need_geometry():
    split = tasks.sample_split("nth_farthest", 1000, 4)
    mask = tasks.nth_farthest_hard_mask(split.inputs, K=8)
    np.testing.assert_array_equal(mask, split.extra["n"] < 7)
    assert 0.8 < mask.mean() < 0.95
    with pytest.raises(ValueError, match="K=5"):
        tasks.nth_farthest_hard_mask(split.inputs, K=5)


# ---------------------------------------------------------------- sorting, tracking, pairs


def test_sorting_matches_brute_force_rank():
    data = tasks.generate_reasoning_data("sorting", 400, 10, seed=1)
    lay, t = data.meta.extra["layout"], data.meta.options["items"]
    for i in range(400):
        row = data.train.inputs[i]
        values = {}
        for s in range(t):
            assert hot(row[s], lay, "query") == -1 and hot(row[s], lay, "rank") == -1
            values[hot(row[s], lay, "item")] = float(row[s, lay["value"][0]])
        assert sorted(values) == list(range(t))
        assert hot(row[t], lay, "query") == 0 and not row[t, : lay["item"][1]].any()
        k = hot(row[t], lay, "rank")
        # the item of rank k has exactly k items below it (earlier index first on a tie)
        below = {
            a: sum(values[b] < values[a] or (values[b] == values[a] and b < a) for b in values)
            for a in values
        }
        assert below[int(data.train.targets[i])] == k


def test_sorting_sizes():
    meta = tasks.task_meta("sorting", items=7)
    assert (meta.seq_len, meta.input_size, meta.num_classes) == (8, 16, 7)


@pytest.mark.parametrize("wrap", [False, True])
def test_tracking_matches_replay(wrap):
    data = tasks.generate_reasoning_data(
        "tracking", 400, 10, seed=1, objects=3, places=5, moves=7, wrap=wrap
    )
    lay = data.meta.extra["layout"]
    j, p = 3, 5
    wrapped = 0
    for i in range(400):
        row = data.train.inputs[i]
        position = {}
        for s in range(j):
            assert hot(row[s], lay, "object") == s
            position[s] = hot(row[s], lay, "place")
            assert position[s] >= 0
        for s in range(j, j + 7):
            assert hot(row[s], lay, "place") == -1
            who = hot(row[s], lay, "object")
            way = hot(row[s], lay, "direction")
            moved = position[who] + (1 if way == 1 else -1)
            if not wrap:
                assert 0 <= moved < p, "on a line a shown step never leaves the line"
            wrapped += not 0 <= moved < p
            position[who] = moved % p
        assert hot(row[-1], lay, "query") == 0
        asked = hot(row[-1], lay, "object")
        assert data.train.targets[i] == position[asked]
    assert (wrapped > 0) == wrap


@pytest.mark.parametrize("options", [{}, {"hard": True}, {"wrap": True}, {"objects": 1}])
def test_tracking_answer_distribution_is_exact(options):
    meta = tasks.task_meta("tracking", **options)
    expected = meta.extra["answer_distribution"]
    assert expected.sum() == pytest.approx(1.0)
    assert meta.chance_accuracy == pytest.approx(expected.max())
    targets = tasks.sample_split("tracking", 40000, 3, **options).targets
    observed = np.bincount(targets, minlength=meta.num_classes) / targets.size
    # four standard errors of a proportion over 40,000 samples
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / 40000))


def test_tracking_chance_by_hand():
    # one object, one move on a line of 3: from an end it must go to the middle, from the
    # middle it goes to either end, so P(middle) = 2/3 and P(each end) = 1/6.
    meta = tasks.task_meta("tracking", objects=1, places=3, moves=1)
    np.testing.assert_allclose(meta.extra["answer_distribution"], [1 / 6, 2 / 3, 1 / 6])
    assert meta.chance_accuracy == pytest.approx(2 / 3)


def test_pair_matching_matches_lookup():
    data = tasks.generate_reasoning_data("pair_matching", 400, 10, seed=1)
    lay, n_pair = data.meta.extra["layout"], data.meta.options["pairs"]
    for i in range(400):
        row = data.train.inputs[i]
        table = {}
        for s in range(n_pair):
            key = hot(row[s], lay, "key")
            assert key not in table, "keys must be distinct"
            table[key] = hot(row[s], lay, "value")
        assert hot(row[n_pair], lay, "query") == 0 and hot(row[n_pair], lay, "value") == -1
        assert data.train.targets[i] == table[hot(row[n_pair], lay, "key")]


# ---------------------------------------------------------------- synthetic bAbI


def replay_story(row, lay):
    """Replay a synthetic story step by step; return the question and answer it implies."""
    at, last_move = {}, {}
    holder, lies, touched, move_at_drop = {}, {}, {}, {}
    history = {}  # object -> list of [place, move that put it there], consecutive places differ
    statements = 0
    for s, step in enumerate(row[:-1]):
        if not step.any():
            assert statements == 0, "padding may only precede the story"
            continue
        statements += 1
        assert hot(step, lay, "question") == -1
        who, verb = hot(step, lay, "actor"), hot(step, lay, "verb")
        what, where = hot(step, lay, "object"), hot(step, lay, "place")
        if verb == MOVE:
            assert what == -1 and where >= 0 and where != at.get(who)
            at[who], last_move[who] = where, s
            for thing, carrier in holder.items():
                if carrier == who:
                    history[thing].append([where, s])
        elif verb == GET:
            assert where == -1 and who in at, "a person gets something only at a known place"
            assert holder.get(what) is None, "nobody else may hold it"
            assert lies.get(what, at[who]) == at[who], "it must lie where the person is"
            holder[what], touched[what] = who, s
            lies.pop(what, None)
            trail = history.setdefault(what, [])
            if trail and trail[-1][0] == at[who]:
                trail[-1][1] = last_move[who]
            else:
                trail.append([at[who], last_move[who]])
        else:
            assert verb == DROP and where == -1 and holder.get(what) == who
            holder[what], lies[what], touched[what] = None, at[who], s
            move_at_drop[what] = last_move[who]

    q = row[-1]
    kind = hot(q, lay, "question")
    assert hot(q, lay, "verb") == -1
    if kind == 0:
        person = hot(q, lay, "actor")
        return 1, at[person], [last_move[person]], statements
    thing = hot(q, lay, "object")
    if kind == 1:
        carrier = holder.get(thing)
        if carrier is None:
            return 2, lies[thing], [touched[thing], move_at_drop[thing]], statements
        return 2, at[carrier], [touched[thing], last_move[carrier]], statements
    trail = history[thing]
    asked = hot(q, lay, "place")
    last = max(j for j, (place, _) in enumerate(trail) if place == asked)
    assert last >= 1, "the object must have been somewhere before its last visit to X"
    moves = [trail[last][1], trail[last - 1][1]]
    carrier = hot(row[touched[thing]], lay, "actor")
    assert all(hot(row[m], lay, "actor") == carrier for m in moves), "one carrying spell"
    return 3, trail[last - 1][0], [touched[thing], *moves], statements


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"hard": True},
        {"facts": 3, "distractors": 0},
        {"facts": (1, 2), "distractors": 7},
        {"facts": 1, "objects": 0, "people": 1},
        {"facts": [3, 2], "people": 1, "objects": 1, "places": 2},
    ],
)
def test_babi_synthetic_matches_replay(options):
    data = tasks.generate_reasoning_data("babi_synthetic", 300, 10, seed=6, **options)
    lay = data.meta.extra["layout"]
    extra = data.train.extra
    distractors = data.meta.options["distractors"]
    for i in range(300):
        facts, answer, support, statements = replay_story(data.train.inputs[i], lay)
        assert data.train.targets[i] == answer
        assert extra["facts"][i] == facts
        assert list(extra["supporting"][i][:facts]) == support
        assert (extra["supporting"][i][facts:] == -1).all()
        assert statements == facts + distractors
    assert set(np.unique(extra["facts"])) == set(data.meta.options["facts"])


def test_babi_synthetic_three_fact_answer_differs_from_asked_place():
    split = tasks.sample_split("babi_synthetic", 300, 2, facts=3)
    meta = tasks.task_meta("babi_synthetic", facts=3)
    lay = meta.extra["layout"]
    asked = split.inputs[:, -1, lay["place"][0] : lay["place"][1]].argmax(axis=1)
    assert (asked != split.targets).all()


def test_babi_synthetic_render_reads_like_babi():
    meta = tasks.task_meta("babi_synthetic")
    split = tasks.sample_split("babi_synthetic", 50, 1)
    texts = [meta.render(split.inputs[i], split.targets[i]) for i in range(50)]
    joined = "\n".join(texts)
    assert "moved to the" in joined and "Where is" in joined
    assert "Where was the" in joined and "before the" in joined
    for text, target in zip(texts, split.targets):
        assert text.endswith(f"answer: {meta.extra['names']['places'][target]}")
