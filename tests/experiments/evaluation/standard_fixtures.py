"""Small examples in the upstream schemas (as HF datasets exports them), written for meshlm's tests."""

HELLASWAG = [
    {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes"
        " smiles.",
        "ctx_b": "then",
        "ctx": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes"
        " smiles. then",
        "endings": [
            ", the man adds wax to the windshield and cuts it.",
            ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes"
            " snow as the we girls sled.",
            ", the man puts on a christmas coat, knitted with netting.",
            ", the man continues removing the snow on his car.",
        ],
        "source_id": "activitynet~v_-1IBHYS3L-Y",
        "split": "val",
        "split_type": "indomain",
        "label": "3",
    },
    {
        "ind": 12,
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to grow tomatoes [title] Pick a sunny spot.",
        "ctx_b": "[step] tomatoes need  six hours of sun.",
        "ctx": "[header] How to grow tomatoes [title] Pick a sunny spot. [step] tomatoes need  six hours of sun.",
        "endings": [
            "[substeps] Water them [title] every day.",
            "Plant them  in the dark.",
            "Paint the pots [step] blue.",
            "Dig a hole [title] twice as deep.",
        ],
        "source_id": "wikihow~123",
        "split": "val",
        "split_type": "zeroshot",
        "label": "0",
    },
    {
        "ind": 20,
        "activity_label": "Playing guitar",
        "ctx_a": "A boy sits on a bed holding a guitar.",
        "ctx_b": "he",
        "ctx": "A boy sits on a bed holding a guitar. he",
        "endings": [" strums the strings.", " eats the guitar.", " sings to the cat.", " jumps out the window."],
        "source_id": "activitynet~v_abc",
        "split": "val",
        "split_type": "indomain",
        "label": "1",
    },
]

HELLASWAG_TRAIN = [
    {
        "ind": 1,
        "activity_label": "Washing dishes",
        "ctx_a": "A woman fills the sink with water.",
        "ctx_b": "she",
        "ctx": "A woman fills the sink with water. she",
        "endings": [" adds soap.", " sleeps.", " drives off.", " paints it."],
        "source_id": "activitynet~v_t1",
        "split": "train",
        "split_type": "indomain",
        "label": "0",
    },
    {
        "ind": 2,
        "activity_label": "Food [title] Cooking",
        "ctx_a": "[header] How to boil an egg [title] Fill a pot.",
        "ctx_b": "[step] put the egg in.",
        "ctx": "[header] How to boil an egg [title] Fill a pot. [step] put the egg in.",
        "endings": ["Wait ten minutes.", "Throw it.", "[title] Eat the pot.", "Sing."],
        "source_id": "wikihow~t2",
        "split": "train",
        "split_type": "indomain",
        "label": "0",
    },
]


def _arc(i, question, texts, labels, key):
    return {"id": f"Mercury_{i}", "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


ARC = [
    _arc(1, "Which is a mammal?", ["whale", "shark", "trout", "eel"], ["A", "B", "C", "D"], "A"),
    _arc(2, "What melts ice fastest?", ["salt", "sand", "shade"], ["1", "2", "3"], "1"),
    _arc(3, "Which planet is red?", ["Venus", "Mars", "Earth", "Jupiter", "Neptune"], list("ABCDE"), "B"),
    _arc(4, "What do plants need to make food?", ["sunlight", "darkness", "plastic", "metal"], list("ABCD"), "A"),
]

ARC_TRAIN = [
    _arc(10, "What is frozen water?", ["ice", "steam"], ["A", "B"], "A"),
    _arc(11, "Which is hot?", ["snow", "fire", "ice"], ["A", "B", "C"], "B"),
]

PIQA = [
    {
        "goal": "How do I dry wet shoes?",
        "sol1": "Stuff them with newspaper.",
        "sol2": "Fill them with water.",
        "label": 0,
    },
    {"goal": "To open a jar", "sol1": "freeze the lid shut.", "sol2": "twist the lid hard.", "label": 1},
    {"goal": "Keep bread fresh", "sol1": "Seal it in a bag.", "sol2": "Leave it in the rain.", "label": 0},
]

PIQA_TRAIN = [
    {"goal": "Cut paper", "sol1": "use scissors.", "sol2": "use soup.", "label": 0},
    {"goal": "Light a room", "sol1": "close the eyes.", "sol2": "turn on a lamp.", "label": 1},
]

WINOGRANDE = [
    {
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    },
    {
        "sentence": "The trophy does not fit into the suitcase because the _ is too small.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "2",
    },
    {
        "sentence": "Ian could not lift the box but Tom could, because _ was weak.",
        "option1": "Ian",
        "option2": "Tom",
        "answer": "1",
    },
]

WINOGRANDE_TRAIN = [
    {
        "sentence": "The cup broke when it hit the floor because the _ was hard.",
        "option1": "cup",
        "option2": "floor",
        "answer": "2",
    },
    {"sentence": "Ann gave Beth a gift because _ was kind.", "option1": "Ann", "option2": "Beth", "answer": "1"},
]


def _race(article: str, *problems: tuple[str, list[str], str]) -> dict:
    """EleutherAI/race's row: one article, its problems a Python literal (as its JSON lines hold them)."""
    listed = [{"answer": answer, "options": options, "question": question} for question, options, answer in problems]
    return {"article": article, "problems": repr(listed)}


RACE = [
    _race(
        "Lucy was afraid of water when she was young. Her father took her to the pool every Sunday and taught her"
        " to float. After two summers she could swim across the lake near her grandmother's house.",
        ("Who taught Lucy to swim?", ["Her mother.", "Her father.", "Her teacher.", "Her grandmother."], "B"),
        ("At first Lucy  _  .", ["loved the lake", "was afraid of water", "swam every day", "lived by the sea"], "B"),
        (
            "What can we learn from the passage?",
            ["Practice helps.", "Pools are cold.", "Lakes are dangerous.", "Sundays are boring."],
            "A",
        ),
    ),
    _race(
        "Many cities now ask people to sort their rubbish. Paper, glass and plastic go into different bins, and"
        " the city turns them into new things. It costs less than burying rubbish.",
        ("The passage is mainly about  _  .", ["cooking", "recycling", "travel", "sports"], "B"),
        ("Recycling  _  than burying rubbish.", ["costs more", "is slower", "costs less", "is harder"], "C"),
    ),
    _race(
        "The museum opens at nine o'clock. Tickets cost five dollars, but children under six get in free. \"Please"
        ' do not touch the paintings," says a sign at the door.',
        (
            "How much does a ticket cost for a child of four?",
            ["Nothing.", "Five dollars.", "Nine dollars.", "Six dollars."],
            "A",
        ),
    ),
]

RACE_TRAIN = [
    _race(
        "Jack grows tomatoes in his garden. He waters them every evening and picks them in August.",
        ("When does Jack pick his tomatoes?", ["In May.", "In June.", "In August.", "In December."], "C"),
        ("Jack waters his tomatoes  _  .", ["every evening", "once a week", "never", "in winter"], "A"),
    ),
    _race(
        "The school library is open from Monday to Friday. Students may borrow three books for two weeks.",
        ("How many books can a student borrow?", ["One.", "Two.", "Three.", "Four."], "C"),
    ),
]


def _story(i: int, sentences: list[str], quiz1: str, quiz2: str, right: int) -> dict:
    story = {f"input_sentence_{n}": s for n, s in enumerate(sentences, start=1)}
    ending = {"sentence_quiz1": quiz1, "sentence_quiz2": quiz2, "answer_right_ending": right}
    return {"story_id": f"b929f263-1dcd-4a0b-b267-{i:012d}"} | story | ending


STORYCLOZE = [
    _story(
        1,
        [
            "Rick grew up in a troubled household.",
            "He never found good support in family, and turned to gangs.",
            "It wasn't long before Rick got shot in a robbery.",
            "The incident caused him to turn a new leaf.",
        ],
        "He is happy now.",
        "He joined a gang.",
        1,
    ),
    _story(
        2,
        [
            "Laverne needs to prepare something for her friend's party.",
            "She decides to bake a batch of brownies.",
            "She chooses a recipe and follows it closely.",
            "Laverne tests one of the brownies to make sure it is delicious.",
        ],
        "The brownies are so delicious Laverne eats two of them.",
        "Laverne doesn't go to her friend's party.",
        1,
    ),
    _story(
        3,
        [
            "Sarah had been dreaming of visiting Europe for years.",
            "She had finally saved enough for the trip.",
            "She landed in Spain and traveled east across the continent.",
            "She didn't like how different everything was.",
        ],
        "Sarah then decided to move to Europe.",
        "Sarah decided that she preferred her home over Europe.",
        2,
    ),
    _story(
        4,
        [
            "Gina misplaced her phone at her grandparents.",
            "It wasn't anywhere in the living room.",
            "She realized she was in the car before.",
            "She grabbed her dad's keys and ran outside.",
        ],
        "She didn't want her phone anymore.",
        "She found her phone in the car.",
        2,
    ),
]

STORYCLOZE_TRAIN = [
    _story(
        10,
        [
            "Tom wanted a dog.",
            "His parents said he was too young.",
            "On his tenth birthday they drove him to a shelter.",
            "A small brown puppy licked his hand.",
        ],
        "Tom took the puppy home.",
        "Tom never liked animals.",
        1,
    ),
    _story(
        11,
        [
            "Amy forgot her umbrella.",
            "Dark clouds filled the sky at noon.",
            "She had to walk home from school.",
            "Halfway there it started to pour.",
        ],
        "Amy stayed perfectly dry.",
        "Amy arrived home soaked.",
        2,
    ),
]


def _trivia(i: int, question: str, value: str, aliases: list[str]) -> dict:
    """mandarjoshi/trivia_qa rc.nocontext: the evidence lists are present and empty."""
    normalized = [a.lower() for a in aliases]
    answer = {
        "aliases": aliases,
        "normalized_aliases": normalized,
        "matched_wiki_entity_name": "",
        "normalized_matched_wiki_entity_name": "",
        "normalized_value": value.lower(),
        "type": "WikipediaEntity",
        "value": value,
    }
    return {
        "question": question,
        "question_id": f"tc_{i}",
        "question_source": "http://www.triviacountry.com/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": answer,
    }


TRIVIAQA = [
    _trivia(
        1,
        "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
        "Sunset Boulevard",
        ["Sunset Boulevard", "Sunset Blvd", "Sunset boulevard", "Sunset Bulevard"],
    ),
    _trivia(2, "Who was the man behind The Chipmunks?", "David Seville", ["David Seville", "Ross Bagdasarian"]),
    _trivia(
        3,
        'In which city is the "Little Mermaid" statue & harbour',
        "Copenhagen",
        ["Copenhagen", "København", "Kobenhavn", "Copenhagen, Denmark"],
    ),
    _trivia(
        4, "What is the capital of the U.S. state of New York?", "Albany", ["Albany", "Albany, NY", "Albany, New York"]
    ),
]

TRIVIAQA_TRAIN = [
    _trivia(10, "Which planet is known as the Red Planet?", "Mars", ["Mars", "The Red Planet", "Planet Mars"]),
    _trivia(11, "Who wrote 'Pride and Prejudice'?", "Jane Austen", ["Jane Austen", "Austen", "Austen, Jane"]),
]

# lm-eval name -> (evaluated rows, shot rows, file suffix, lm-eval YAML, split overrides)
TASKS = {
    "hellaswag": (HELLASWAG, HELLASWAG_TRAIN, "jsonl", "hellaswag/hellaswag.yaml", "validation"),
    "arc_easy": (ARC, ARC_TRAIN, "parquet", "arc/arc_easy.yaml", "test"),
    "arc_challenge": (ARC[::-1], ARC_TRAIN, "jsonl", "arc/arc_challenge.yaml", "test"),
    "piqa": (PIQA, PIQA_TRAIN, "parquet", "piqa/piqa.yaml", "validation"),
    "winogrande": (WINOGRANDE, WINOGRANDE_TRAIN, "jsonl", "winogrande/default.yaml", "validation"),
    "race": (RACE, RACE_TRAIN, "parquet", "race/race.yaml", "test"),
    "storycloze_2016": (STORYCLOZE, STORYCLOZE_TRAIN, "jsonl", "storycloze/storycloze_2016.yaml", "test"),
    "storycloze_2018": (STORYCLOZE[::-1], STORYCLOZE_TRAIN, "parquet", "storycloze/storycloze_2018.yaml", "test"),
    "triviaqa": (TRIVIAQA, TRIVIAQA_TRAIN, "jsonl", "triviaqa/default.yaml", "validation"),
}


def write(rows: list[dict], path) -> None:
    """As `Dataset.to_json` (one object per line) or `Dataset.to_parquet` writes them."""
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    else:
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
