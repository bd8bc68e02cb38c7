"""The shared kernel both runtimes and views use: events, grammars (xgrammar and constraint replay),
sampling params, detokenizing, logprobs, models, the chat template, the token trace's step format and
the SGLang version pin. It imports no other sgnb room."""
