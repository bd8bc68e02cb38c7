"""``python -m sgnb.bench``: the notebook workloads measured side by side (``run``), the vLLM peer
rounds (``peer``, ``peer_vllm``), the router's policies (``router``) and the HTTP layer's cost.

Kept free of imports: ``.venv-peer/bin/python -m sgnb.bench.peer_vllm`` runs without sgnb's
dependencies.
"""
