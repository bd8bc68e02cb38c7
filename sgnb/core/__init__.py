"""The shared kernel both runtimes and views use: events, sampling params, detokenizing, logprobs,
models, the chat template, token traces and the SGLang version pin. It imports no other sgnb room."""
