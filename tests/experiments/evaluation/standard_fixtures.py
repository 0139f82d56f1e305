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

# lm-eval name -> (evaluated rows, shot rows, file suffix, lm-eval YAML, split overrides)
TASKS = {
    "hellaswag": (HELLASWAG, HELLASWAG_TRAIN, "jsonl", "hellaswag/hellaswag.yaml", "validation"),
    "arc_easy": (ARC, ARC_TRAIN, "parquet", "arc/arc_easy.yaml", "test"),
    "arc_challenge": (ARC[::-1], ARC_TRAIN, "jsonl", "arc/arc_challenge.yaml", "test"),
    "piqa": (PIQA, PIQA_TRAIN, "parquet", "piqa/piqa.yaml", "validation"),
    "winogrande": (WINOGRANDE, WINOGRANDE_TRAIN, "jsonl", "winogrande/default.yaml", "validation"),
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
