"""Reader for the bAbI question-answering files (v1.2 text format) and their vectorisation.

Each line is "<id> <statement>" or "<id> <question>\\t<answer>\\t<supporting ids>". The ids count
every line of a story, questions included, and return to 1 where a new story starts. Answers
may be comma-joined lists ("apple,milk", "n,w"); supporting ids name earlier statements.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._base import ReasoningData, Split, TaskMeta, verdict

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class BabiFormatError(ValueError):
    """A line of a bAbI file does not follow the format; the message names file and line."""


@dataclass
class BabiExample:
    """One question with the statements of its story that precede it."""

    story: list[list[str]]
    story_ids: list[int]
    question: list[str]
    answer: str
    answers: list[str]
    supporting: list[int]
    question_id: int = 0
    source: str = ""


def tokenize(text: str) -> list[str]:
    """Lower-case word and punctuation tokens: "Where is Mary? " -> ['where', 'is', 'mary', '?']."""
    return _TOKEN.findall(text.lower())


def parse_babi(lines: Iterable[str], source: str = "<lines>") -> list[BabiExample]:
    """Parse bAbI lines into one BabiExample per question; `source` names the file in errors."""
    examples: list[BabiExample] = []
    statements: dict[int, list[str]] = {}
    previous = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        head, _, rest = line.partition(" ")
        if not head.isascii() or not head.isdigit() or not rest.strip():
            raise BabiFormatError(f"{where}: expected '<id> <text>', got {line!r}")
        line_id = int(head)
        if line_id == 1:
            statements = {}
        elif line_id != previous + 1:
            raise BabiFormatError(
                f"{where}: line id {line_id} follows {previous}; expected {previous + 1}, "
                f"or 1 to start a new story"
            )
        previous = line_id
        if "\t" not in rest:
            statements[line_id] = tokenize(rest)
            continue

        fields = rest.split("\t")
        if len(fields) not in (2, 3) or not fields[0].strip() or not fields[1].strip():
            raise BabiFormatError(
                f"{where}: a question line needs '<id> <question>\\t<answer>\\t<supporting ids>',"
                f" got {line!r}"
            )
        ids = fields[2].split() if len(fields) == 3 else []
        if not all(s.isascii() and s.isdigit() for s in ids):
            raise BabiFormatError(f"{where}: supporting ids must be integers, got {fields[2]!r}")
        supporting = [int(s) for s in ids]
        unknown = [s for s in supporting if s not in statements]
        if unknown:
            raise BabiFormatError(
                f"{where}: supporting id(s) {unknown} are not statements earlier in this story"
            )
        answer = fields[1].strip()
        examples.append(
            BabiExample(
                story=[list(tokens) for tokens in statements.values()],
                story_ids=list(statements),
                question=tokenize(fields[0]),
                answer=answer,
                answers=[word.strip().lower() for word in answer.split(",")],
                supporting=supporting,
                question_id=line_id,
                source=where,
            )
        )
    return examples


def load_babi(path: str | Path) -> list[BabiExample]:
    """Read one bAbI file (any task, 1k or 10k) into a list of BabiExample, one per question.

    The file is UTF-8, with or without a byte-order mark; other bytes raise BabiFormatError.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BabiFormatError(
            f"{path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start})"
        ) from exc
    return parse_babi(io.StringIO(text, newline=None), source=str(path))


@dataclass
class Vocab:
    """Word ids (0 = <pad>, 1 = <unk>) and answer classes, both built on training examples."""

    words: list[str]
    answers: list[str]
    word_index: dict[str, int] = field(init=False, repr=False)
    answer_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.words[:2] != ["<pad>", "<unk>"]:
            raise ValueError(f"words must start with '<pad>', '<unk>', got {self.words[:2]}")
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Word ids of tokens, unknown words mapped to UNK (1)."""
        return [self.word_index.get(t, UNK) for t in tokens]

    def answer_id(self, answer: str) -> int:
        """Class id of an answer string; an answer never seen in training is an error."""
        if answer not in self.answer_index:
            raise ValueError(
                f"answer {answer!r} is not among the {len(self.answers)} training answers "
                f"{self.answers[:10]}{' ...' if len(self.answers) > 10 else ''}"
            )
        return self.answer_index[answer]


def build_vocab(examples: Sequence[BabiExample]) -> Vocab:
    """Vocabulary of story and question words, and the set of answers, from training examples."""
    words = {t for ex in examples for sentence in ex.story for t in sentence}
    words |= {t for ex in examples for t in ex.question}
    answers = sorted({ex.answer for ex in examples})
    return Vocab(words=["<pad>", "<unk>", *sorted(words)], answers=answers)


@dataclass
class BabiArrays:
    """Padded word ids of N examples: the last S statements of each story, most recent last.

    story (N, S, L), story_ids (N, S) line ids with 0 for padding, question (N, Lq),
    answer (N,) class ids, supporting (N, F) positions within the S story slots
    (-1 for padding or a fact that fell outside the window).
    """

    story: np.ndarray
    story_ids: np.ndarray
    question: np.ndarray
    answer: np.ndarray
    supporting: np.ndarray


def _size(name: str, value: int | None, needed: int) -> int:
    if value is None:
        return max(needed, 1)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def vectorize(
    examples: Sequence[BabiExample],
    vocab: Vocab,
    max_sentences: int | None = None,
    sentence_len: int | None = None,
    question_len: int | None = None,
) -> BabiArrays:
    """Word ids story (N, S, L), question (N, Lq) and answers (N,) keeping the last S statements.

    Sizes left as None fit the longest story, statement and question in `examples`. Stories are
    left-padded so that the most recent statement is always in the last slot; a statement or
    question longer than the given length is an error rather than silently cut.
    """
    if not examples:
        raise ValueError("vectorize needs at least one example")
    n = len(examples)
    s = _size("max_sentences", max_sentences, max(len(ex.story) for ex in examples))
    kept = [ex.story[-s:] for ex in examples]
    longest = max((len(tokens) for story in kept for tokens in story), default=1)
    length = _size("sentence_len", sentence_len, longest)
    q_len = _size("question_len", question_len, max(len(ex.question) for ex in examples))
    f = max(1, max(len(ex.supporting) for ex in examples))

    story = np.zeros((n, s, length), dtype=np.int64)
    story_ids = np.zeros((n, s), dtype=np.int64)
    question = np.zeros((n, q_len), dtype=np.int64)
    answer = np.zeros(n, dtype=np.int64)
    supporting = np.full((n, f), -1, dtype=np.int64)
    for i, ex in enumerate(examples):
        pad = s - len(kept[i])
        ids = ex.story_ids[len(ex.story) - len(kept[i]) :]
        for j, tokens in enumerate(kept[i]):
            if len(tokens) > length:
                raise ValueError(
                    f"{ex.source}: statement of {len(tokens)} tokens exceeds sentence_len={length}"
                )
            story[i, pad + j, : len(tokens)] = vocab.encode(tokens)
        story_ids[i, pad:] = ids
        if len(ex.question) > q_len:
            raise ValueError(
                f"{ex.source}: question of {len(ex.question)} tokens exceeds question_len={q_len}"
            )
        question[i, : len(ex.question)] = vocab.encode(ex.question)
        try:
            answer[i] = vocab.answer_id(ex.answer)
        except ValueError as exc:
            raise ValueError(f"{ex.source} (question id {ex.question_id}): {exc}") from None
        slot = {line_id: pad + j for j, line_id in enumerate(ids)}
        supporting[i, : len(ex.supporting)] = [slot.get(k, -1) for k in ex.supporting]
    return BabiArrays(story, story_ids, question, answer, supporting)


def bag_of_words(arrays: BabiArrays, num_words: int) -> np.ndarray:
    """Recurrent-model input (N, S + 1, V + 1) float32: one word-count step per statement, then
    the question step with its flag in the last feature; padded statements are all-zero steps."""
    # Known gap: counts lose word order inside a sentence ("A is north of B"); harmless for
    # tasks 1-3, not for tasks such as 17 or 19, which need the padded word ids instead.
    n, s, _ = arrays.story.shape
    x = np.zeros((n, s + 1, num_words + 1), dtype=np.float32)
    rows, slots, cols = np.nonzero(arrays.story)
    np.add.at(x, (rows, slots, arrays.story[rows, slots, cols]), 1.0)
    rows, cols = np.nonzero(arrays.question)
    np.add.at(x, (rows, s, arrays.question[rows, cols]), 1.0)
    x[:, s, num_words] = 1.0
    return x


def _render_bag(row: np.ndarray, target: Any, prediction: Any, vocab: Vocab) -> str:
    lines = []
    v = len(vocab)
    for step in range(row.shape[0]):
        if not row[step].any():
            continue
        counts = row[step, :v]
        words = [
            vocab.words[w] + (f" x{int(counts[w])}" if counts[w] > 1 else "")
            for w in np.nonzero(counts)[0]
        ]
        kind = "question" if row[step, v] else "statement"
        lines.append(f"step {step} {kind}: {{{', '.join(words)}}}")
    answer = vocab.answers[int(target)]
    guess = None if prediction is None else vocab.answers[int(prediction)]
    lines.append(verdict(answer, guess))
    return "\n".join(lines)


def _task_file(babi_dir: Path, task_id: int, split: str) -> Path:
    found = sorted(babi_dir.glob(f"qa{task_id}_*_{split}.txt"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one file qa{task_id}_*_{split}.txt in {babi_dir}, found {len(found)}"
        )
    return found[0]


def _split(examples: list[BabiExample], vocab: Vocab, sizes: dict[str, int]) -> Split:
    arrays = vectorize(examples, vocab, **sizes)
    extra = {
        "story": arrays.story,
        "story_ids": arrays.story_ids,
        "question": arrays.question,
        "supporting": arrays.supporting,
        "examples": examples,
    }
    return Split(bag_of_words(arrays, len(vocab)), arrays.answer, extra)


def load_babi_task(
    babi_dir: str | Path, task_id: int, max_sentences: int | None = None
) -> ReasoningData:
    """Vectorised bAbI task `task_id` from qa{id}_*_train.txt / _test.txt in babi_dir.

    Inputs are bag_of_words sequences (N, M + 1, V + 1) over the last M statements (M defaults
    to the longest training story), targets (N,) are answer classes built on train. Each split's
    extra holds the padded word ids, supporting positions and the parsed examples.
    """
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)):
        raise ValueError(f"task_id must be an integer in 1..20, got {task_id!r}")
    if not 1 <= task_id <= 20:
        raise ValueError(f"task_id must be in 1..20, got {task_id}")
    babi_dir = Path(babi_dir)
    train_file = _task_file(babi_dir, task_id, "train")
    test_file = _task_file(babi_dir, task_id, "test")
    train_examples, test_examples = load_babi(train_file), load_babi(test_file)
    for path, examples in ((train_file, train_examples), (test_file, test_examples)):
        if not examples:
            raise ValueError(f"{path} holds no questions")
    vocab = build_vocab(train_examples)

    both = train_examples + test_examples
    m = _size("max_sentences", max_sentences, max(len(ex.story) for ex in train_examples))
    sizes = {
        "max_sentences": m,
        "sentence_len": max((len(t) for ex in both for t in ex.story[-m:]), default=1),
        "question_len": max(len(ex.question) for ex in both),
    }
    train = _split(train_examples, vocab, sizes)
    test = _split(test_examples, vocab, sizes)

    counts = np.bincount(train.targets, minlength=len(vocab.answers))
    v = len(vocab)
    title = train_file.name[: -len("_train.txt")]

    def render(row: np.ndarray, target: Any, prediction: Any = None) -> str:
        return _render_bag(row, target, prediction, vocab)

    meta = TaskMeta(
        name=f"babi_qa{task_id}",
        input_size=v + 1,
        num_classes=len(vocab.answers),
        seq_len=m + 1,
        chance_accuracy=float(counts.max() / counts.sum()),
        target_per_step=False,
        description=f"bAbI {title} as bags of words over the last {m} statements",
        options={"task_id": int(task_id), "max_sentences": m},
        extra={
            "vocab": vocab,
            "layout": {"words": (0, v), "question": (v, v + 1)},
            "train_file": str(train_file),
            "test_file": str(test_file),
            **sizes,
        },
        renderer=render,
    )
    meta.example = meta.render(train.inputs[0], train.targets[0])
    return ReasoningData(train=train, test=test, meta=meta)
