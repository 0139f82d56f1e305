from meshlm.experiments.evaluation.prompts import Item, PromptFormat, draw_shots, encode_pair, fit, render
from meshlm.experiments.evaluation.tasks import arithmetic, scramble
from tests.experiments.evaluation.helpers import PieceTokenizer

POOL = tuple(Item(id=str(i), context=f"q{i} =", target=f"a{i}") for i in range(40))


def test_arithmetic_prompt_is_gpt3_format_byte_for_byte():
    shots = [Item("1", "Q: What is 1 plus 2?\n\nA:", target="3"), Item("2", "Q: What is 5 plus 5?\n\nA:", target="10")]
    query = Item("0", "Q: What is 48 plus 76?\n\nA:", target="124")
    # GPT-3's files: "\n\nQ: What is 48 plus 76?\n\nA:" -> " 124", examples joined by their leading blank line.
    want = "Q: What is 5 plus 5?\n\nA: 10\n\nQ: What is 1 plus 2?\n\nA: 3\n\nQ: What is 48 plus 76?\n\nA:"
    assert render(arithmetic.FORMAT, shots, query) == want
    assert render(arithmetic.FORMAT, [], query) == "Q: What is 48 plus 76?\n\nA:"


def test_scramble_prompt_is_gpt3_format_byte_for_byte():
    shots = [Item("sticks", "skicts =", target="sticks")]
    query = Item("casino", "asinoc =", target="casino")
    want = "Please unscramble the letters into a word, and write that word:\nskicts = sticks\nasinoc ="
    assert render(scramble.FORMAT, shots, query) == want


def test_no_double_space_between_context_and_answer():
    fmt = PromptFormat(target_delimiter=" ", fewshot_delimiter="\n")
    text = render(fmt, [Item("1", "A:", target="7")], Item("2", "A:", target="8"))
    assert "  " not in text and text == "A: 7\nA:"


def test_trailing_space_moves_to_the_continuation():
    tok = PieceTokenizer(pieces=[" world", " w"])
    ctx, cont = encode_pair(tok, "hello ", "world")
    # Naive code encodes "hello " and "world" apart: a bare space token, then "world" letter by letter.
    assert tok.decode(ctx) == "hello" and tok.decode(cont) == " world"
    assert cont == [tok.ids[" world"]]


def test_a_token_spanning_the_boundary_goes_to_the_continuation():
    tok = PieceTokenizer(pieces=["Answer", "Ans"])
    ctx, cont = encode_pair(tok, "Ans", "wer")
    # Splitting the joint encoding at len(encode(context)) leaves an empty continuation (lm-eval issue #1053).
    assert tok.encode("Answer") == [tok.ids["Answer"]] and len(tok.encode("Ans")) == 1
    assert ctx == [] and cont == [tok.ids["Answer"]]
    ctx, cont = encode_pair(tok, "Q: Ans", "wer")
    assert tok.decode(ctx) == "Q: " and cont == [tok.ids["Answer"]] and ctx + cont == tok.encode("Q: Answer")


def test_joint_encoding_is_used_when_the_continuation_alone_would_tokenize_differently():
    tok = PieceTokenizer(pieces=["ab", "bc"])
    ctx, cont = encode_pair(tok, "xa", "bc")
    # Alone, "bc" is one token; read together, "xabc" is x, ab, c: the continuation is the tokens after "x".
    assert ctx + cont == tok.encode("xabc") and tok.decode(ctx) + tok.decode(cont) == "xabc"
    assert cont != tok.encode("bc")


def test_the_item_is_never_among_its_shots():
    for item in POOL:
        shots = draw_shots(POOL, item, len(POOL), seed=0, task="t")
        assert item.id not in {s.id for s in shots} and len(shots) == len(POOL) - 1


def test_shots_are_nested_across_k_and_depend_only_on_seed_task_and_item():
    item = POOL[3]
    sixteen = draw_shots(POOL, item, 16, seed=1, task="t")
    assert draw_shots(POOL, item, 4, seed=1, task="t") == sixteen[:4]
    assert draw_shots(tuple(reversed(POOL)), item, 16, seed=1, task="t") != sixteen  # the pool order is the split's
    assert draw_shots(POOL, item, 16, seed=1, task="t") == sixteen
    assert draw_shots(POOL, item, 16, seed=2, task="t") != sixteen
    assert draw_shots(POOL, item, 16, seed=1, task="u") != sixteen
    assert draw_shots(POOL, POOL[4], 16, seed=1, task="t") != sixteen


def test_too_long_prompts_drop_the_farthest_shots_and_keep_the_query():
    tok = PieceTokenizer()
    fmt = PromptFormat(description="Answer:", fewshot_delimiter="\n")
    query = Item("q", "last question =", target="yes")
    shots = [Item(str(i), f"shot {i} =", target="ok") for i in range(10)]
    fitted = fit(tok, fmt, shots, query, [" yes"], n_ctx=60)
    text = tok.decode(fitted.context_ids)
    assert text == render(fmt, shots[: fitted.n_shots], query)  # exactly the smaller-K prompt
    assert 0 < fitted.n_shots < 10 and not fitted.cut
    assert len(fitted.context_ids) + len(fitted.continuation_ids[0]) - 1 <= 60
    tiny = fit(tok, fmt, shots, query, [" yes"], n_ctx=10)
    assert tiny.n_shots == 0 and tiny.cut
    assert len(tiny.context_ids) + len(tiny.continuation_ids[0]) - 1 == 10  # filled to n_ctx exactly
    assert render(fmt, [], query).endswith(tok.decode(tiny.context_ids))  # the end of the query survives
