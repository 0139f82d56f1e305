"""GPT-3 section 3.9.2 word scrambling, regenerated from wordfreq's English word frequencies.

Format (GPT-3 Appendix G): "Please unscramble the letters into a word, and write that word:\\nasinoc = casino",
one newline between examples. Words: the 10,000 most frequent of more than 4 and fewer than 15 letters (the paper's
rule; wordfreq's English ranking stands in for Norvig's web counts, whose words are lowercase a-z too). Shortest
words follow the released files: 5 letters for A1, 6 for the others.
"""

import functools
import itertools
import random
import re

from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task

FORMAT = PromptFormat(
    description="Please unscramble the letters into a word, and write that word:",
    target_delimiter=" ",
    fewshot_delimiter="\n",
)
_INSERTED = " ./!"  # the characters GPT-3's random insertion puts between letters
N_WORDS = 10_000
WORD = re.compile(r"[a-z]{5,14}")  # GPT-3: "length more than 4 characters and less than 15 characters"


@functools.cache
def words() -> tuple[str, ...]:
    """The N_WORDS most frequent English words that WORD matches, most frequent first."""
    import wordfreq  # deferred: a quarter second of imports that only the word tasks need

    return tuple(itertools.islice((w for w in wordfreq.iter_wordlist("en") if WORD.fullmatch(w)), N_WORDS))


def cycle_letters(word: str, rng: random.Random) -> str:
    # Only rotations that change the word, as in the released files: some rotations of "hahaha" are "hahaha".
    rotations = [word[k:] + word[:k] for k in range(1, len(word))]
    return rng.choice([r for r in rotations if r != word])


def _shuffled_middle(word: str, rng: random.Random, keep: int) -> str:
    middle = list(word[keep:-keep])
    for _ in range(100):  # A1 never returns the word itself (as in the released files); A2 may
        rng.shuffle(middle)
        scrambled = word[:keep] + "".join(middle) + word[-keep:]
        if keep == 2 or scrambled != word:
            return scrambled
    return scrambled


def anagram1(word: str, rng: random.Random) -> str:
    return _shuffled_middle(word, rng, keep=1)


def anagram2(word: str, rng: random.Random) -> str:
    return _shuffled_middle(word, rng, keep=2)


def random_insertion(word: str, rng: random.Random) -> str:
    return "".join(c + rng.choice(_INSERTED) for c in word[:-1]) + word[-1]


def reversed_word(word: str, rng: random.Random) -> str:
    return word[::-1]


# name (lm-evaluation-harness's): (scrambler, shortest word)
SCRAMBLERS = {
    "cycle_letters": (cycle_letters, 6),
    "anagrams1": (anagram1, 5),
    "anagrams2": (anagram2, 6),
    "random_insertion": (random_insertion, 6),
    "reversed_words": (reversed_word, 6),
}
NAMES = tuple(SCRAMBLERS)


def build(name: str, seed: int = 0) -> Task:
    """One item per word, scrambled with Random((name, seed, word)); shots come from the same items."""
    scrambler, shortest = SCRAMBLERS[name]
    items = tuple(
        Item(id=word, context=f"{scrambler(word, random.Random(f'{name}:{seed}:{word}'))} =", target=word)
        for word in words()
        if len(word) >= shortest
    )
    return Task(name=name, kind="generate", items=items, pool=items, fewshot_split="test", fmt=FORMAT, until=("\n",))
