"""Data parallelism the SGLang way: N workers behind SGLang's own router, with a view per worker.

``sgnb.scaleout(workers=2, policy="cache_aware")`` starts them on 127.0.0.1 (:mod:`.core`);
:mod:`.procs` builds the command lines, :mod:`.attribution` tags requests with their worker from
the workers' KV events, :mod:`.runtime` connects a session through the router, :mod:`.views`
draws the trees side by side; ``%sglang cluster`` is :mod:`sgnb.notebook.cluster_magic`.
"""

from sgnb.scaleout.core import Cluster, WorkerInfo, cluster

__all__ = ["Cluster", "WorkerInfo", "cluster"]
