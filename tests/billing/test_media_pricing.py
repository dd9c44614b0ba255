"""The arithmetic of media billing: images priced per image beside tokens,
exact and rounded up once; and the worst case reserved for an embeddings or
image request, which must never be less than what it is then charged."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.admission import DEFAULT_MAX_IMAGE_OUTPUT_TOKENS, worst_case_cost, worst_case_usage
from billing.pricing import cost_of
from schema.jobs import Price, Usage
from schema.media import embeddings_usage, images_usage

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
image_prices = st.decimals(min_value=0, max_value=100, places=8, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=0, max_value=10_000_000)
images = st.integers(min_value=0, max_value=10)
texts = st.text(min_size=1, max_size=200)
token_ids = st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=50)
embedding_inputs = st.one_of(texts, st.lists(texts, min_size=1, max_size=20), token_ids,
                             st.lists(token_ids, min_size=1, max_size=20))


def test_known_image_costs() -> None:
    assert cost_of(Usage(images=2), Price(per_image=Decimal("0.04"))) == 80_000
    assert cost_of(Usage(images=1), Price(per_image=Decimal("0.0000001"))) == 1  # a tenth of a micro-credit rounds up
    # a GPT Image answer: its tokens and its images, rounded up once (25 + 21,760 + 20,000)
    gpt_image = Price(input_per_mtok=Decimal("5"), output_per_mtok=Decimal("40"), per_image=Decimal("0.01"))
    assert cost_of(Usage(input_tokens=5, output_tokens=544, images=2), gpt_image) == 41_785
    # three sub-micro parts that only add up to a whole micro-credit together
    thirds = Price(input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("0.3"), per_image=Decimal("0.0000004"))
    assert cost_of(Usage(input_tokens=1, output_tokens=1, images=1), thirds) == 1


@given(tokens, tokens, images, prices, prices, image_prices)
def test_cost_is_the_exact_amount_rounded_up_once(input_tokens: int, output_tokens: int, count: int,
                                                  input_price: Decimal, output_price: Decimal,
                                                  per_image: Decimal) -> None:
    cost = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=count),
                   Price(input_per_mtok=input_price, output_per_mtok=output_price, per_image=per_image))
    exact = input_tokens * input_price + output_tokens * output_price + count * per_image * 1_000_000
    assert isinstance(cost, int)
    assert cost - 1 < exact <= cost


@given(tokens, tokens, images, images, prices, image_prices)
def test_images_add_to_the_token_cost_and_never_lower_it(input_tokens: int, output_tokens: int, count: int, extra: int,
                                                         price: Decimal, per_image: Decimal) -> None:
    flat = Price(input_per_mtok=price, output_per_mtok=price, per_image=per_image)
    fewer = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=count), flat)
    more = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=count + extra), flat)
    assert fewer <= more <= fewer + math.ceil(extra * per_image * 1_000_000)


@given(embedding_inputs, prices, prices)
def test_an_embeddings_hold_covers_its_estimate_and_ignores_output(given_input: object, input_price: Decimal,
                                                                  output_price: Decimal) -> None:
    payload = {"input": given_input, "max_tokens": 100, "n": 3}  # chat's output settings mean nothing here
    bound = worst_case_usage(payload, 4096, "embeddings")
    assert (bound.output_tokens, bound.images) == (0, 0)
    estimate = embeddings_usage(payload, {"data": []})  # what is charged when the upstream reports nothing
    assert not estimate.reported and estimate.input_tokens <= bound.input_tokens
    price = Price(input_per_mtok=input_price, output_per_mtok=output_price)
    assert worst_case_cost(payload, price, 4096, "embeddings") == cost_of(Usage(input_tokens=bound.input_tokens), price)


@given(token_ids)
def test_token_ids_count_one_each_however_few_digits_they_have(ids: list[int]) -> None:
    assert worst_case_usage({"input": ids}, None, "embeddings").input_tokens == len(ids)
    assert worst_case_usage({"input": [ids, ids]}, None, "embeddings").input_tokens == 2 * len(ids)


@given(st.integers(min_value=1, max_value=10), texts, image_prices)
def test_per_image_models_hold_exactly_n_images(count: int, prompt: str, per_image: Decimal) -> None:
    payload = {"prompt": prompt, "n": count}
    held = worst_case_cost(payload, Price(per_image=per_image), None, "images")
    assert held == math.ceil(count * per_image * 1_000_000)
    charged = cost_of(images_usage(payload, {"data": [{}] * count}), Price(per_image=per_image))
    assert charged == held


@given(st.integers(min_value=1, max_value=10), texts, st.one_of(st.none(), st.integers(min_value=1, max_value=20_000)),
       prices, prices, image_prices)
def test_token_priced_image_models_hold_the_prompt_and_each_images_output(
    count: int, prompt: str, limit: int | None, input_price: Decimal, output_price: Decimal, per_image: Decimal
) -> None:
    payload = {"prompt": prompt, "n": count}
    bound = worst_case_usage(payload, limit, "images")
    assert bound.images == count
    assert bound.output_tokens == count * (limit or DEFAULT_MAX_IMAGE_OUTPUT_TOKENS)
    assert bound.input_tokens >= images_usage(payload, {"data": []}).input_tokens  # the estimate, when none is reported
    price = Price(input_per_mtok=input_price, output_per_mtok=output_price, per_image=per_image)
    answered = Usage(input_tokens=bound.input_tokens, output_tokens=bound.output_tokens, images=count)
    assert worst_case_cost(payload, price, limit, "images") == cost_of(answered, price)
    one_more = worst_case_cost({**payload, "n": count + 1}, price, limit, "images")
    assert one_more >= worst_case_cost(payload, price, limit, "images")


def test_an_image_request_without_n_is_one_image() -> None:
    assert worst_case_usage({"prompt": "a cat"}, None, "images").images == 1
