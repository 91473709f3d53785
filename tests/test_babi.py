"""bAbI reader: parsing of the v1.2 text format, vocabularies, vectorisation and task loading."""

import os
from pathlib import Path

import numpy as np
import pytest

from tasks import babi

BABI_DIR = Path(
    os.environ.get("BABI_DIR", Path(__file__).parents[1] / ".." / "shared" / "data" / "babi" / "en")
)
FILES = {
    1: "qa1_single-supporting-fact",
    2: "qa2_two-supporting-facts",
    3: "qa3_three-supporting-facts",
}
needs_data = pytest.mark.skipif(
    not all(
        (BABI_DIR / f"{name}_{part}.txt").exists()
        for name in FILES.values()
        for part in ("train", "test")
    ),
    reason=f"bAbI tasks 1-3 not found in {BABI_DIR} (set BABI_DIR)",
)


def babi_file(task_id, part):
    return BABI_DIR / f"{FILES[task_id]}_{part}.txt"


# ---------------------------------------------------------------- the real files


@needs_data
@pytest.mark.parametrize("task_id", [1, 2, 3])
@pytest.mark.parametrize("part", ["train", "test"])
def test_each_file_has_a_thousand_questions(task_id, part):
    examples = babi.load_babi(babi_file(task_id, part))
    assert len(examples) == 1000
    for ex in examples:
        assert len(ex.supporting) == task_id
        assert set(ex.supporting) <= set(ex.story_ids)
        assert len(ex.story) == len(ex.story_ids) and ex.story_ids == sorted(ex.story_ids)
        assert ex.question[-1] == "?" and "" not in ex.question


@needs_data
def test_first_story_of_task_one():
    examples = babi.load_babi(babi_file(1, "train"))
    first = examples[0]
    assert first.story == [
        ["mary", "moved", "to", "the", "bathroom", "."],
        ["john", "went", "to", "the", "hallway", "."],
    ]
    assert first.story_ids == [1, 2]
    assert first.question == ["where", "is", "mary", "?"]
    assert first.answer == "bathroom" and first.answers == ["bathroom"]
    assert first.supporting == [1]
    assert first.question_id == 3

    second = examples[1]
    assert second.story_ids == [1, 2, 4, 5]
    assert second.story[2] == ["daniel", "went", "back", "to", "the", "hallway", "."]
    assert second.question == ["where", "is", "daniel", "?"]
    assert (second.answer, second.supporting) == ("hallway", [4])

    fifth = examples[4]
    assert fifth.story_ids == [1, 2, 4, 5, 7, 8, 10, 11, 13, 14]
    assert (fifth.answer, fifth.supporting) == ("bathroom", [8])

    restarted = examples[5]  # the second story starts again at line id 1
    assert restarted.story_ids == [1, 2]
    assert restarted.story[0] == ["sandra", "travelled", "to", "the", "office", "."]
    assert (restarted.answer, restarted.supporting) == ("bathroom", [2])


@needs_data
def test_first_questions_of_tasks_two_and_three():
    two = babi.load_babi(babi_file(2, "train"))[0]
    assert two.question == ["where", "is", "the", "football", "?"]
    assert (two.answer, two.supporting, two.story_ids) == ("garden", [3, 6], [1, 2, 3, 4, 5, 6])
    three = babi.load_babi(babi_file(3, "train"))[0]
    assert three.question == ["where", "was", "the", "football", "before", "the", "bathroom", "?"]
    assert (three.answer, three.supporting) == ("office", [23, 17, 5])
    assert three.story_ids == list(range(1, 25))


PLACES = {"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}
GETS = {"got", "grabbed", "picked", "took"}
DROPS = {"discarded", "dropped", "left", "put"}


def replay_babi(ex):
    """Answer a bAbI 1-3 question and name its supporting lines by replaying the statements."""
    at, last_move, holder, touched, drop_move = {}, {}, {}, {}, {}
    trail = {}  # object -> list of [place, supporting move line], consecutive places differ
    for line_id, words in zip(ex.story_ids, ex.story):
        who, thing = words[0], words[-2] if words[-2] != "there" else words[-3]
        if thing in PLACES:
            at[who], last_move[who] = thing, line_id
            for obj, carrier in holder.items():
                if carrier == who and trail[obj][-1][0] != thing:
                    trail[obj].append([thing, line_id])
        elif GETS & set(words):
            holder[thing], touched[thing] = who, line_id
            # real bAbI stories may let a person whose place is unknown pick something up
            here, move = at.get(who), last_move.get(who)
            places = trail.setdefault(thing, [])
            if places and places[-1][0] == here:
                places[-1][1] = move
            else:
                places.append([here, move])
        else:
            assert DROPS & set(words), words
            holder[thing], touched[thing] = None, line_id
            drop_move[thing] = last_move.get(who)
    subject = ex.question[-2]
    if "before" in ex.question:
        places = trail[ex.question[3]]
        last = max(j for j, (place, _) in enumerate(places) if place == subject)
        moves = {places[last][1], places[last - 1][1]}
        return places[last - 1][0], {touched[ex.question[3]], *moves}
    if subject in at:
        return at[subject], {last_move[subject]}
    carrier = holder.get(subject)
    if carrier is None:
        return trail[subject][-1][0], {touched[subject], drop_move[subject]}
    return at[carrier], {touched[subject], last_move[carrier]}


@needs_data
@pytest.mark.parametrize("task_id", [1, 2, 3])
def test_answers_and_supporting_lines_agree_with_a_replay_of_the_story(task_id):
    for part in ("train", "test"):
        for ex in babi.load_babi(babi_file(task_id, part)):
            answer, supporting = replay_babi(ex)
            assert (ex.answer, set(ex.supporting)) == (answer, supporting), ex.source


@needs_data
def test_load_babi_task_one():
    data = babi.load_babi_task(BABI_DIR, 1)
    meta = data.meta
    vocab = meta.extra["vocab"]
    assert meta.name == "babi_qa1" and meta.num_classes == 6
    assert sorted(vocab.answers) == sorted(PLACES)
    longest = max(len(ex.story) for ex in data.train.extra["examples"])
    assert meta.seq_len == longest + 1
    for split in (data.train, data.test):
        assert split.inputs.shape == (1000, meta.seq_len, meta.input_size)
        assert split.inputs.dtype == np.float32 and split.targets.dtype == np.int64
        answers = [vocab.answers[t] for t in split.targets]
        assert answers == [ex.answer for ex in split.extra["examples"]]
        assert (split.inputs[:, -1, -1] == 1).all() and (split.inputs[:, :-1, -1] == 0).all()
    first = data.train.inputs[0]
    assert not first[:-3].any(), "the two statements sit just before the question"
    mary = vocab.word_index["mary"]
    assert first[-3, mary] == 1 and first[-1, mary] == 1 and first[-2, mary] == 0
    assert "answer: bathroom" in meta.example and "mary" in meta.example

    majority = np.bincount(data.train.targets).argmax()
    accuracy = np.mean(data.test.targets == majority)
    assert 0.1 < meta.chance_accuracy < 0.3
    assert abs(accuracy - meta.chance_accuracy) < 0.05


@needs_data
def test_load_babi_task_keeps_the_last_sentences():
    data = babi.load_babi_task(BABI_DIR, 3, max_sentences=12)
    assert data.meta.seq_len == 13 and data.train.extra["story"].shape[1] == 12
    for i, ex in enumerate(data.train.extra["examples"][:200]):
        kept = ex.story_ids[-12:]
        ids = data.train.extra["story_ids"][i]
        assert list(ids[12 - len(kept) :]) == kept
        for line_id, slot in zip(ex.supporting, data.train.extra["supporting"][i]):
            assert (slot == -1) == (line_id not in kept)
            if slot >= 0:
                assert ids[slot] == line_id


def test_load_babi_task_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="qa4_"):
        babi.load_babi_task(tmp_path, 4)
    with pytest.raises(ValueError, match="1..20"):
        babi.load_babi_task(tmp_path, 21)


# ---------------------------------------------------------------- small files written here

SMALL = (
    "1 Mary picked up the apple.\n"
    "2 Mary got the milk there.\n"
    "3 What is Mary carrying? \tapple,milk\t1 2\n"
    "4 John went to the kitchen.\n"
    "5 Where is John? \tkitchen\t4\n"
    "1 The kitchen is north of the garden.\n"
    "2 The hallway is west of the garden.\n"
    "3 How do you go from the kitchen to the hallway? \ts,w\t1 2\n"
)


def write(tmp_path, text, name="qa9_small_train.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_story_reset_and_multi_word_answers(tmp_path):
    examples = babi.load_babi(write(tmp_path, SMALL))
    assert len(examples) == 3
    carry, where, path = examples
    assert carry.answer == "apple,milk" and carry.answers == ["apple", "milk"]
    assert carry.question == ["what", "is", "mary", "carrying", "?"]
    assert carry.story_ids == [1, 2] and carry.supporting == [1, 2]
    assert where.story_ids == [1, 2, 4], "the question line keeps its place in the numbering"
    assert where.story[-1] == ["john", "went", "to", "the", "kitchen", "."]
    assert path.story_ids == [1, 2] and path.story[0][:2] == ["the", "kitchen"]
    assert path.answers == ["s", "w"] and path.supporting == [1, 2]
    assert path.question[-3:] == ["the", "hallway", "?"]
    assert path.source.endswith("line 8")


def test_tokenize_separates_punctuation():
    assert babi.tokenize("Where is Mary? ") == ["where", "is", "mary", "?"]
    assert babi.tokenize("Mary, John.") == ["mary", ",", "john", "."]


def test_windows_line_endings_and_blank_lines(tmp_path):
    path = write(tmp_path, "1 Mary went to the office.\r\n\r\n2 Where is Mary?\toffice\t1\r\n")
    (ex,) = babi.load_babi(path)
    assert ex.answer == "office" and ex.supporting == [1]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("1 Mary went home.\nx John left.\n", 2, "expected '<id> <text>'"),
        ("1 Mary went home.\n3 John left.\n", 2, "line id 3 follows 1"),
        ("2 Mary went home.\n", 1, "line id 2 follows 0"),
        ("1 Mary went home.\n2 Where is Mary?\t\t1\n", 2, "question line needs"),
        ("1 Mary went home.\n2 Where is Mary?\thome\ta\n", 2, "must be integers"),
        ("1 Mary went home.\n2 Where is Mary?\thome\t2\n", 2, r"supporting id\(s\) \[2\]"),
        ("1 A.\n2 Q?\tx\t1\n3 Q?\tx\t2\n", 3, r"supporting id\(s\) \[2\]"),
        ("1 Mary went home.\n2 Q?\thome\t1\textra\n", 2, "question line needs"),
        ("1\n", 1, "expected '<id> <text>'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    with pytest.raises(babi.BabiFormatError, match=problem) as info:
        babi.load_babi(path)
    assert f"{path}, line {line}:" in str(info.value)


# ---------------------------------------------------------------- vocabulary and vectors


def examples_from(tmp_path, text, name):
    return babi.load_babi(write(tmp_path, text, name))


def test_vocab_is_built_on_train_and_maps_unknown_words(tmp_path):
    train = examples_from(tmp_path, SMALL, "train.txt")
    test = examples_from(
        tmp_path,
        "1 Zelda picked up the apple.\n2 What is Zelda carrying? \tapple,milk\t1\n",
        "t.txt",
    )
    vocab = babi.build_vocab(train)
    assert vocab.words[:2] == ["<pad>", "<unk>"]
    assert "zelda" not in vocab.word_index and "mary" in vocab.word_index
    assert vocab.answers == sorted(["apple,milk", "kitchen", "s,w"])
    arrays = babi.vectorize(test, vocab, sentence_len=8, question_len=6)
    assert arrays.story.shape == (1, 1, 8) and arrays.question.shape == (1, 6)
    assert arrays.story[0, 0, 0] == babi.UNK and arrays.question[0, 2] == babi.UNK
    assert arrays.story[0, 0, 3] == vocab.word_index["the"]
    assert (arrays.story[0, 0, 6:] == babi.PAD).all()
    assert arrays.answer[0] == vocab.answers.index("apple,milk")


def test_vectorize_keeps_the_last_sentences_in_order(tmp_path):
    train = examples_from(tmp_path, SMALL, "train.txt")
    vocab = babi.build_vocab(train)
    full = babi.vectorize(train, vocab)
    assert full.story.shape == (3, 3, 8)
    np.testing.assert_array_equal(full.story_ids, [[0, 1, 2], [1, 2, 4], [0, 1, 2]])
    np.testing.assert_array_equal(full.supporting, [[1, 2], [2, -1], [1, 2]])
    last = babi.vectorize(train, vocab, max_sentences=2)
    np.testing.assert_array_equal(last.story_ids, [[1, 2], [2, 4], [1, 2]])
    np.testing.assert_array_equal(last.supporting, [[0, 1], [1, -1], [0, 1]])
    np.testing.assert_array_equal(last.story[1], full.story[1, 1:])
    with pytest.raises(ValueError, match="sentence_len=3"):
        babi.vectorize(train, vocab, sentence_len=3)
    with pytest.raises(ValueError, match="max_sentences"):
        babi.vectorize(train, vocab, max_sentences=0)


def test_bag_of_words_counts_words_per_step(tmp_path):
    train = examples_from(tmp_path, SMALL, "train.txt")
    vocab = babi.build_vocab(train)
    arrays = babi.vectorize(train, vocab)
    x = babi.bag_of_words(arrays, len(vocab))
    assert x.shape == (3, 4, len(vocab) + 1) and x.dtype == np.float32
    the = vocab.word_index["the"]
    assert x[2, 1, the] == 2, "'The kitchen is north of the garden.' has 'the' twice"
    assert x[2, 1].sum() == 8 and x[2, 3].sum() == 11 + 1
    assert not x[0, 0].any(), "a padded statement slot is an all-zero step"
    assert x[:, 3, -1].tolist() == [1, 1, 1] and not x[:, :3, -1].any()
    assert x[:, :, babi.PAD].sum() == 0


def test_unseen_answer_is_an_error(tmp_path):
    vocab = babi.build_vocab(examples_from(tmp_path, SMALL, "train.txt"))
    test = examples_from(tmp_path, "1 Bill went to the park.\n2 Where is Bill?\tpark\t1\n", "t.txt")
    with pytest.raises(ValueError, match="'park' is not among the 3 training answers") as info:
        babi.vectorize(test, vocab)
    assert str(tmp_path / "t.txt") + ", line 2 (question id 2)" in str(info.value)


def test_a_byte_order_mark_is_ignored(tmp_path):
    plain = babi.load_babi(write(tmp_path, SMALL, "plain.txt"))
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.encode("utf-8"))
    assert babi.load_babi(path) == [
        babi.BabiExample(**{**vars(ex), "source": ex.source.replace("plain", "bom")})
        for ex in plain
    ]


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("1 Mary went home.\n2 Ren\u00e9 left.\n".encode("latin-1"))
    with pytest.raises(babi.BabiFormatError, match=rf"{path}, line 2: not UTF-8.*0xe9"):
        babi.load_babi(path)


def test_load_babi_task_on_small_files(tmp_path):
    write(tmp_path, SMALL, "qa9_small_train.txt")
    write(tmp_path, SMALL.replace("Mary", "Zelda"), "qa9_small_test.txt")
    data = babi.load_babi_task(tmp_path, 9, max_sentences=2)
    assert data.train.inputs.shape == (3, 3, len(data.meta.extra["vocab"]) + 1)
    np.testing.assert_array_equal(data.train.targets, data.test.targets)
    unk = data.test.inputs[0, :, babi.UNK]
    assert unk.tolist() == [1, 1, 1], "Zelda is unknown in both statements and the question"
    assert data.meta.chance_accuracy == pytest.approx(1 / 3)
    assert data.meta.description.startswith("bAbI qa9_small")
    part = data.test.subset([2, 0])
    assert [ex.answer for ex in part.extra["examples"]] == ["s,w", "apple,milk"]
    np.testing.assert_array_equal(part.extra["story"], data.test.extra["story"][[2, 0]])
